#!/usr/bin/env python
"""Train the GAN (SPADE generator + PatchGAN, guided by NADS-Net): `python train_gan.py --help`."""

if __name__ == "__main__":
    # First of all, before torch is imported: a Ctrl-C or SIGTERM during start-up is a clean stop too.
    from common.training.stopping import STOP

    STOP.install()

    import sys

    from gan.train import main

    sys.exit(main())
