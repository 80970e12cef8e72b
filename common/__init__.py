"""Code shared by the GAN and NADS-Net trainings: pose conventions, label maps, data,
augmentation, networks, checkpoints, devices and visualisation."""
