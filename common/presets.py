"""What both trainings' presets share: the input sizes and the data each preset trains on.

- `seed`: 384 px for both networks, on `data_sample/` (or your data, in the seed's layout,
  given with the data flags).
- `cpu`: NADS-Net at 128 px (its PCKt needs the resolution) and the GAN at 64 px (a quarter of
  the cost; its frames are resized to 128 px where NADS-Net uses them), on a synthetic set
  large enough to learn from: 600 training frames and 80
  validation frames drawn from another seed, so validation sees new people and cabins. It is
  built once into the git-ignored `.cache/synthetic/` (a stopped build leaves nothing
  half-made) and reused by every later run.
Any data flag given on the command line replaces the preset's data (unset ones then default
to `data_sample/`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tqdm import tqdm

NADSNET_IMAGE_SIZE = {"seed": 384, "cpu": 128}
GAN_IMAGE_SIZE = {"seed": 384, "cpu": 64}
DATA_SAMPLE = Path(__file__).resolve().parents[1] / "data_sample"
TRAIN_FILE = "Train_keypoint_Annotation_sample.json"
VALID_FILE = "Valid_keypoint_Annotation_sample.json"
# The cpu preset's synthetic set (common.synthetic.ensure_synthetic_dataset's arguments).
CPU_SYNTHETIC_SET = dict(train=600, valid=80, seed=1, valid_seed=2, width=320, height=180)
DATA_FLAGS = ("train_annotations", "valid_annotations", "images_dir", "masks_dir")


def layout_paths(root: Path) -> dict[str, Path]:
    """The data flags' values for a folder in the seed's layout."""
    return {"train_annotations": root / TRAIN_FILE, "valid_annotations": root / VALID_FILE,
            "images_dir": root / "Raw_Images", "masks_dir": root / "Seatbelt_Mask"}


def prepare_data(options: Any, log: Any, check_stop=lambda: None) -> None:
    """Fill the data flags left unset: with the preset's data when none was given (building the
    cpu preset's synthetic set if it is not cached yet; `check_stop` is called after every
    frame, so a stop request ends the build at once), else with data_sample/'s paths. Then
    --valid-images-dir / --valid-masks-dir default to the training folders."""
    given = [flag for flag in DATA_FLAGS if getattr(options, flag, None) is not None]
    if given or options.preset != "cpu":
        root = DATA_SAMPLE
    else:
        root = build_cpu_set(log, check_stop)
    for flag, path in layout_paths(root).items():
        if hasattr(options, flag) and getattr(options, flag) is None:
            setattr(options, flag, path)
    if hasattr(options, "valid_images_dir"):
        options.valid_images_dir = options.valid_images_dir or options.images_dir
        options.valid_masks_dir = options.valid_masks_dir or options.masks_dir


def build_cpu_set(log: Any, check_stop) -> Path:
    from common.synthetic import ensure_synthetic_dataset

    total = CPU_SYNTHETIC_SET["train"] + CPU_SYNTHETIC_SET["valid"]
    bar = None

    def announce(line: str) -> None:
        nonlocal bar
        log.info(line)
        bar = tqdm(total=total, desc="synthetic frames", leave=False, dynamic_ncols=True)

    def on_frame() -> None:
        bar.update(1)
        check_stop()

    try:
        root = ensure_synthetic_dataset(announce=announce, on_frame=on_frame, **CPU_SYNTHETIC_SET)
    finally:
        if bar is not None:
            bar.close()
    log.info(f"data: the cpu preset's synthetic set {root}")
    return root
