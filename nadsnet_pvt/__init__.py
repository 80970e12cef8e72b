"""NADS-Net (PVT backbone) training with GAN pose augmentation (entry point: train_nadsnet.py)."""
