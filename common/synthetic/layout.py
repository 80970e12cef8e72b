"""The seed's data layout: folder and file names, and the default frame size."""

from __future__ import annotations

RAW_IMAGES_DIR = "Raw_Images"
SEATBELT_MASK_DIR = "Seatbelt_Mask"
# (split name, its annotation file); a split's index here is part of every frame's seed.
SPLITS: tuple[tuple[str, str], ...] = (
    ("train", "Train_keypoint_Annotation_sample.json"),
    ("valid", "Valid_keypoint_Annotation_sample.json"),
)
DEFAULT_WIDTH = 640
DEFAULT_HEIGHT = 360
