"""Tests of common.synthetic: layout, annotation format, flags, masks, determinism, data_sample.

Small frames (320 x 180) and few of them keep this file to a few seconds.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from common.pose import (
    FRONT_ROW_TORSO_HEIGHT,
    LEFT_ELBOW,
    LEFT_HIP,
    LEFT_SHOULDER,
    LEFT_WRIST,
    NECK,
    NUM_KEYPOINTS,
    RIGHT_ELBOW,
    RIGHT_HIP,
    RIGHT_SHOULDER,
    RIGHT_WRIST,
)
from common.synthetic import (
    RAW_IMAGES_DIR,
    SEATBELT_MASK_DIR,
    SPLITS,
    render_frame,
    torso_height_384,
    write_dataset,
)

REPO = Path(__file__).resolve().parents[1]
DATA_SAMPLE = REPO / "data_sample"
# The command recorded in data_sample/README.md.
SAMPLE_ARGS = {"train": 24, "valid": 8, "seed": 0, "width": 640, "height": 360}
SMALL = {"width": 320, "height": 180}


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _load(root: Path) -> dict[str, list[dict]]:
    return {split: json.loads((root / name).read_text())["annotations"] for split, name in SPLITS}


def _people(annotations: list[dict]) -> dict[str, np.ndarray]:
    """image_id -> (P, 9, 3) keypoints of its Person annotations."""
    grouped: dict[str, list] = {}
    for a in annotations:
        if a["label"] == "Person":
            grouped.setdefault(a["image_id"], []).append(np.asarray(a["keypoints"], np.float64).reshape(-1, 3))
    return {k: np.stack(v) for k, v in grouped.items()}


def _check_dataset(root: Path) -> None:
    """Seed format (SPEC 1) and flag rules, for every annotation and file under `root`."""
    for split, annotations in _load(root).items():
        assert isinstance(annotations, list) and annotations
        for index, a in enumerate(annotations):
            where = f"{split} annotation {index}"
            assert set(a) == {"image_id", "label", "keypoints"}, where
            assert isinstance(a["image_id"], str) and "\\" not in a["image_id"], where
            assert a["label"] in ("Person", "Steering_Wheel"), where
            assert len(a["keypoints"]) == 3 * NUM_KEYPOINTS, where
            assert all(isinstance(v, (int, float)) for v in a["keypoints"]), where
        for image_id, people in _people(annotations).items():
            assert image_id.startswith(f"{split}/")
            image = cv2.imread(str(root / RAW_IMAGES_DIR / f"{image_id}.png"), cv2.IMREAD_UNCHANGED)
            mask = cv2.imread(str(root / SEATBELT_MASK_DIR / f"{image_id}.png"), cv2.IMREAD_UNCHANGED)
            assert image is not None and mask is not None, image_id
            height, width = image.shape[:2]
            assert mask.shape == (height, width, 3)
            assert set(np.unique(mask)) <= {0, 255}, "mask is binary"
            assert (mask[..., 0] == mask[..., 1]).all() and (mask[..., 0] == mask[..., 2]).all()
            x, y, v = people[..., 0], people[..., 1], people[..., 2]
            assert set(np.unique(v)) <= {0, 1, 2}, image_id
            assert (x[v == 0] == 0).all() and (y[v == 0] == 0).all(), "v=0 means the coordinates are missing"
            present = v > 0
            assert (x[present] >= 0).all() and (x[present] <= width - 1).all(), image_id
            assert (y[present] >= 0).all() and (y[present] <= height - 1).all(), image_id
            # The camera faces the people: their right shoulder is on the image's left.
            both = present[:, RIGHT_SHOULDER] & present[:, LEFT_SHOULDER]
            assert (x[both, RIGHT_SHOULDER] < x[both, LEFT_SHOULDER]).all(), image_id
            # Visible arm joints are arm pixels, and arm pixels are never belt pixels.
            for joint in (RIGHT_WRIST, RIGHT_ELBOW, LEFT_ELBOW, LEFT_WRIST):
                visible = v[:, joint] == 2
                xs = np.round(x[visible, joint]).astype(int)
                ys = np.round(y[visible, joint]).astype(int)
                assert (mask[ys, xs, 0] == 0).all(), f"{image_id}: belt drawn over a visible arm joint"


def test_cli_writes_the_seed_layout(tmp_path):
    out = tmp_path / "synthetic"
    result = subprocess.run(
        [sys.executable, "-m", "common.synthetic", "--out", str(out), "--train", "3", "--valid", "2",
         "--seed", "3", "--width", "320", "--height", "180"],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [RAW_IMAGES_DIR, SEATBELT_MASK_DIR] + [name for _, name in SPLITS])
    annotations = _load(out)
    for (split, _), count in zip(SPLITS, (3, 2)):
        ids = sorted({a["image_id"] for a in annotations[split]})
        assert ids == [f"{split}/frame_{i:06d}" for i in range(count)]
        assert sorted(_people(annotations[split])) == ids, "every frame has at least one Person"
        for image_id in ids:
            for folder in (RAW_IMAGES_DIR, SEATBELT_MASK_DIR):
                assert (out / folder / f"{image_id}.png").is_file()
    image = cv2.imread(str(out / RAW_IMAGES_DIR / "train" / "frame_000000.png"), cv2.IMREAD_UNCHANGED)
    assert image.shape[:2] == (180, 320)
    _check_dataset(out)


def test_same_seed_same_bytes_other_seed_other_frames(tmp_path):
    first, second, other = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    write_dataset(first, 2, 1, seed=11, **SMALL)
    write_dataset(second, 2, 1, seed=11, **SMALL)
    write_dataset(other, 2, 1, seed=12, **SMALL)
    files = _files(first)
    assert len(files) == 2 + 2 * 3
    assert files == _files(second)
    other_files = _files(other)
    assert files.keys() == other_files.keys()
    for name in files:
        if name.startswith(RAW_IMAGES_DIR) or name.endswith(".json"):
            assert files[name] != other_files[name], name


def test_frames_do_not_depend_on_how_many_are_written():
    # Per-frame RNG: frame (seed, split, i) is the same whatever the run's length or other frames.
    a = render_frame(5, 1, 3, **SMALL)
    b = render_frame(5, 1, 3, **SMALL)
    c = render_frame(5, 0, 3, **SMALL)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.keypoints, b.keypoints)
    assert a.image_id == "valid/frame_000003" and c.image_id == "train/frame_000003"
    assert a.image.shape != c.image.shape or not np.array_equal(a.image, c.image)


def test_masks_rows_and_flags_over_many_frames():
    frames = [render_frame(2, 0, i, **SMALL) for i in range(24)]
    flags = np.concatenate([f.keypoints[..., 2].ravel() for f in frames])
    assert {0, 1, 2} <= set(np.unique(flags)), "visible, occluded and outside-the-frame keypoints all occur"
    for f in frames:
        assert set(np.unique(f.seatbelt_mask)) <= {0, 255}
        front = [i for i, row in enumerate(f.rows) if row == "front"]
        assert 1 <= len(front) <= 2
        if any(f.belted[i] for i in front):
            assert (f.seatbelt_mask == 255).sum() > 50, f"{f.image_id}: a worn belt shows in the mask"
        if not any(f.belted):
            assert not f.seatbelt_mask.any(), f"{f.image_id}: no belt, empty mask"
        for row, person in zip(f.rows, f.keypoints):
            if person[[NECK, RIGHT_HIP, LEFT_HIP], 2].all():
                height = torso_height_384(person, 320, 180)
                assert (height > FRONT_ROW_TORSO_HEIGHT) == (row == "front"), (f.image_id, row, height)
    assert any("back" in f.rows for f in frames)
    assert any(f.image.ndim == 2 for f in frames) or any(
        (f.image[..., 0] == f.image[..., 2]).all() for f in frames), "near-infrared (grey) frames occur"


@pytest.mark.skipif(not (DATA_SAMPLE / SPLITS[0][1]).is_file(), reason="data_sample/ not generated")
def test_data_sample_is_the_recorded_command_output(tmp_path):
    readme = (DATA_SAMPLE / "README.md").read_text()
    command = ("python -m common.synthetic --out data_sample --train {train} --valid {valid} --seed {seed}"
               .format(**SAMPLE_ARGS))
    assert command in readme
    total = sum(p.stat().st_size for p in DATA_SAMPLE.rglob("*") if p.is_file())
    assert total <= 6_000_000, f"data_sample is {total} bytes"
    _check_dataset(DATA_SAMPLE)
    committed = _load(DATA_SAMPLE)
    for (split, _), count in zip(SPLITS, (SAMPLE_ARGS["train"], SAMPLE_ARGS["valid"])):
        assert sorted({a["image_id"] for a in committed[split]}) == [f"{split}/frame_{i:06d}" for i in range(count)]
    people = {k: v for split in committed.values() for k, v in _people(split).items()}
    torso = [torso_height_384(p, 640, 360) for kp in people.values() for p in kp if p[[NECK, RIGHT_HIP, LEFT_HIP], 2].all()]
    assert min(torso) < FRONT_ROW_TORSO_HEIGHT < max(torso), "front-row and back-row people both occur"
    assert any(a["label"] != "Person" for split in committed.values() for a in split)
    assert any(cv2.imread(str(p), cv2.IMREAD_UNCHANGED).ndim == 2 for p in (DATA_SAMPLE / RAW_IMAGES_DIR).rglob("*.png"))

    # Regenerate the first frames of each split (frames do not depend on the run's length) and
    # compare pixels and annotations; PNG bytes could differ between zlib builds, pixels cannot.
    prefix = {"train": 3, "valid": 2}
    write_dataset(tmp_path, prefix["train"], prefix["valid"], seed=SAMPLE_ARGS["seed"],
                  width=SAMPLE_ARGS["width"], height=SAMPLE_ARGS["height"])
    fresh = _load(tmp_path)
    for split, count in prefix.items():
        ids = {f"{split}/frame_{i:06d}" for i in range(count)}
        assert [a for a in committed[split] if a["image_id"] in ids] == fresh[split]
        for image_id in ids:
            for folder in (RAW_IMAGES_DIR, SEATBELT_MASK_DIR):
                path = f"{folder}/{image_id}.png"
                old = cv2.imread(str(DATA_SAMPLE / path), cv2.IMREAD_UNCHANGED)
                new = cv2.imread(str(tmp_path / path), cv2.IMREAD_UNCHANGED)
                assert old.shape == new.shape and np.array_equal(old, new), path
