"""Shared pytest fixtures.

`tiny_dataset_dir` writes a small dataset in the seed's format into tmp_path:
random-noise frames, seatbelt masks with a diagonal belt, and a JSON annotation file, so
tests of the dataset, the training loops and the scripts run on real files in seconds.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

# Tests import the project's packages (common, gan, nadsnet_pvt) from the repository root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Environment for training subprocesses started by tests: one thread each (see `one_thread`).
SINGLE_THREAD_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.fixture(autouse=True)
def no_native_bf16(monkeypatch):
    """Every test runs as on a CPU without native bfloat16, so that `--amp auto` and the
    lines a run starts with are the same on any machine; a test of bf16 passes `--amp bf16` or
    sets the detection itself. (Subprocess runs of the cpu preset pass `--amp off`.)"""
    monkeypatch.setattr("common.parallel.devices.cpu_bf16_supported", lambda: False)


@pytest.fixture
def one_thread():
    """Run a test with torch on one thread: tiny networks gain nothing from two, and OpenMP
    spin-waiting makes them several times slower when the machine is loaded."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# A seated person in fractions of the frame (x, y), keypoint order of common.posedata.pose.
_PERSON_TEMPLATE = np.array(
    [
        (0.30, 0.62),  # right wrist
        (0.32, 0.48),  # right elbow
        (0.38, 0.32),  # right shoulder
        (0.50, 0.30),  # neck
        (0.62, 0.32),  # left shoulder
        (0.68, 0.48),  # left elbow
        (0.70, 0.62),  # left wrist
        (0.44, 0.76),  # right hip
        (0.56, 0.76),  # left hip
    ]
)


@dataclass
class TinyDataset:
    """Paths and contents of a dataset written by `tiny_dataset_dir`."""

    root: Path
    annotation_file: Path
    images_dir: Path
    masks_dir: Path
    image_ids: list[str]
    annotations: list[dict] = field(default_factory=list)  # as written to the JSON
    width: int = 0
    height: int = 0

    def write_annotations(self, content) -> Path:
        """Rewrite the annotation file with `content` (a JSON-able object, or raw text if str)."""
        text = content if isinstance(content, str) else json.dumps(content)
        self.annotation_file.write_text(text)
        return self.annotation_file

    def dataset_args(self) -> tuple[Path, Path, Path]:
        """(annotation_file, images_dir, masks_dir) for PoseDataset."""
        return self.annotation_file, self.images_dir, self.masks_dir


def person_keypoints(width: int, height: int, shift_x: float = 0.0, scale: float = 1.0) -> list[float]:
    """A plausible seated person: the flat 27-number list (x, y, v=2) in source pixels.

    `shift_x` moves the person right by that fraction of the width; `scale` shrinks it about the
    neck. Coordinates keep a fractional part so scaling precision is tested.
    """
    neck = _PERSON_TEMPLATE[3]
    xy = (neck + (_PERSON_TEMPLATE - neck) * scale + (shift_x, 0.0)) * (width, height)
    xy = np.round(xy + 0.25, 2)
    flat = np.concatenate([xy, np.full((len(xy), 1), 2.0)], axis=1).ravel()
    return [float(value) for value in flat]


def write_frame(path: Path, width: int, height: int, rng: np.random.Generator, extension: str = ".png") -> Path:
    """A random-noise colour frame (uint8 BGR) at `path` + extension; returns the file path."""
    path = path.with_name(path.name + extension)
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    if not cv2.imwrite(str(path), pixels):
        raise RuntimeError(f"could not write {path}")
    return path


def write_belt_mask(path: Path, width: int, height: int, thickness: int = 6, extension: str = ".png") -> Path:
    """A grey uint8 mask (0 / 255) with a diagonal belt of `thickness` px; returns the file path."""
    path = path.with_name(path.name + extension)
    path.parent.mkdir(parents=True, exist_ok=True)
    mask = np.zeros((height, width), dtype=np.uint8)
    cv2.line(mask, (width // 3, 0), (2 * width // 3, height - 1), 255, thickness)
    if not cv2.imwrite(str(path), mask):
        raise RuntimeError(f"could not write {path}")
    return path


@pytest.fixture
def tiny_dataset_dir(tmp_path):
    """Factory: make(num_images=3, width=200, height=100, people_per_image=1, image_ids=None,
    extension='.png', seed=0) -> TinyDataset.

    `people_per_image` is an int or a list (one count per image). `image_ids` may contain
    subfolders written with backslashes (the seed's Windows ids); they are written to the JSON
    as given and the files are created at the forward-slash path. Each call writes a new folder.
    """
    counter = iter(range(1_000_000))

    def make(
        num_images: int = 3,
        width: int = 200,
        height: int = 100,
        people_per_image: int | list[int] = 1,
        image_ids: list[str] | None = None,
        extension: str = ".png",
        seed: int = 0,
    ) -> TinyDataset:
        rng = np.random.default_rng(seed)
        root = tmp_path / f"dataset{next(counter)}"
        images_dir, masks_dir = root / "Raw_Images", root / "Seatbelt_Mask"
        image_ids = list(image_ids) if image_ids is not None else [f"frame_{i:03d}" for i in range(num_images)]
        counts = people_per_image if isinstance(people_per_image, list) else [people_per_image] * len(image_ids)
        annotations = []
        for image_id, count in zip(image_ids, counts):
            relative = image_id.replace("\\", "/")
            write_frame(images_dir / relative, width, height, rng, extension)
            write_belt_mask(masks_dir / relative, width, height)
            for person in range(count):
                shift = (person - (count - 1) / 2) * 0.25
                annotations.append(
                    {"image_id": image_id, "label": "Person", "keypoints": person_keypoints(width, height, shift, 0.6)}
                )
        annotations.append({"image_id": image_ids[0], "label": "Seatbelt", "bbox": [0, 0, 1, 1]})
        dataset = TinyDataset(
            root=root,
            annotation_file=root / "annotations.json",
            images_dir=images_dir,
            masks_dir=masks_dir,
            image_ids=[image_id.replace("\\", "/") for image_id in image_ids],
            annotations=annotations,
            width=width,
            height=height,
        )
        dataset.write_annotations({"info": "tiny test set", "annotations": annotations})
        return dataset

    return make
