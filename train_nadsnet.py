#!/usr/bin/env python
"""Train NADS-Net with GAN pose augmentation. `python train_nadsnet.py --help` lists the options."""

import sys

from nadsnet_pvt.train import main

if __name__ == "__main__":
    sys.exit(main())
