"""SPADE GAN training with NADS-Net guidance (entry point: train_gan.py)."""
