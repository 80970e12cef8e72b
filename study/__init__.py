"""The pose-augmentation study: does NADS-Net generalise better with frames a GAN renders in
changed arm poses? `python -m study --preset cpu|gpu --out DIR` (see docs/study.md, "Does pose
augmentation help?")."""
