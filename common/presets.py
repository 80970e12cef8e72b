"""Values both trainings' presets share, so that a generator trained with `--preset cpu` fits
NADS-Net trained with `--preset cpu` (the same input size), and likewise for `seed`."""

PRESET_IMAGE_SIZE = {"seed": 384, "cpu": 64}
PRESET_NAMES = tuple(sorted(PRESET_IMAGE_SIZE))
