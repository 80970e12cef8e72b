"""The pose-augmentation study: does NADS-Net generalise better with frames a GAN renders in
changed arm poses? `python -m study --preset cpu|gpu --out DIR` (see README "Does pose
augmentation help?")."""
