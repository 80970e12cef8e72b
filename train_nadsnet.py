#!/usr/bin/env python
"""Train NADS-Net with generated, pose-augmented frames: `python train_nadsnet.py --help`."""

if __name__ == "__main__":
    # First of all, before torch is imported: a Ctrl-C or SIGTERM during start-up is a clean stop too.
    from common.training.stopping import STOP

    STOP.install()

    import sys

    from nadsnet_pvt.train import main

    sys.exit(main())
