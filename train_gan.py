#!/usr/bin/env python
"""Train the pose-conditioned SPADE GAN. `python train_gan.py --help` lists the options."""

import sys

from gan.train import main

if __name__ == "__main__":
    sys.exit(main())
