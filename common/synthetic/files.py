"""Writing frames to disk in the seed's layout: PNG images and masks, annotation JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterable, Sequence

import cv2
import numpy as np

from common.posedata.dataset import annotation_file_text
from common.synthetic.arms import ARM_POSE_FAMILIES, check_arm_poses, format_arm_poses
from common.synthetic.frame import Frame, render_frame
from common.synthetic.layout import DEFAULT_HEIGHT, DEFAULT_WIDTH, RAW_IMAGES_DIR, SEATBELT_MASK_DIR, SPLITS

# Beside the annotation files: how the set was drawn, so its frames can be drawn again
# (common.synthetic.oracle re-renders them in changed poses).
SET_RECORD = "synthetic_set.json"

# Run-length matching: files nearly as small as level 9's at a small fraction of its encoding time.
PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 9, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]


def frame_annotations(frame: Frame) -> list[dict]:
    """The frame's annotations in the seed format: one "Person" per occupant with 27 numbers
    (x, y rounded to 0.1 px, v), its seat row ("front" / "back") and its arms' families
    ("arm_poses": [right arm, left arm]), plus a "Steering_Wheel" one on some frames."""
    result = []
    for person, row, arm_poses in zip(frame.keypoints, frame.rows, frame.arm_poses):
        flat: list[float | int] = []
        for x, y, v in person:
            if v == 0:
                flat += [0, 0, 0]
            else:
                flat += [round(float(x), 1), round(float(y), 1), int(v)]
        result.append({"image_id": frame.image_id, "label": "Person", "keypoints": flat, "row": row,
                       "arm_poses": list(arm_poses)})
    if frame.wheel_annotation:  # a non-Person label that loaders must skip
        result.append({"image_id": frame.image_id, "label": "Steering_Wheel", "keypoints": [0] * 27})
    return result


def write_annotation_file(path: Path, annotations: Sequence[dict]) -> None:
    """One annotation per line, keys sorted: stable bytes and readable diffs."""
    path.write_text(annotation_file_text(annotations, sort_keys=True), encoding="utf-8")


def write_frame_images(out: Path, frame: Frame) -> None:
    """Raw_Images/<id>.png as rendered; Seatbelt_Mask/<id>.png as 3 equal channels."""
    for folder, pixels in ((RAW_IMAGES_DIR, frame.image),
                           (SEATBELT_MASK_DIR, np.repeat(frame.seatbelt_mask[..., None], 3, axis=2))):
        path = out / folder / f"{frame.image_id}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        ok, encoded = cv2.imencode(".png", pixels, PNG_PARAMS)
        if not ok:
            raise RuntimeError(f"PNG encoding failed for {path}")
        path.write_bytes(encoded.tobytes())


def _count(stats: dict, frame: Frame) -> None:
    """Add one frame's numbers to `stats` (keys as write_dataset returns them)."""
    stats["frames"] += 1
    stats["people"] += len(frame.rows)
    stats["back_row"] += frame.rows.count("back")
    stats["single_channel"] += frame.image.ndim == 2
    stats["grey"] += frame.image.ndim == 2 or bool(np.array_equal(frame.image[..., 0], frame.image[..., 1])
                                                  and np.array_equal(frame.image[..., 1], frame.image[..., 2]))
    for family in (pose for person in frame.arm_poses for pose in person):
        stats["arm_poses"][family] += 1


def write_dataset(out: Path, train: int, valid: int, seed: int, width: int = DEFAULT_WIDTH,
                  height: int = DEFAULT_HEIGHT, *, arm_poses: Iterable[str] | None = None,
                  valid_seed: int | None = None, valid_arm_poses: Iterable[str] | None = None,
                  on_frame: Callable[[], object] | None = None) -> dict:
    """Render and write both splits into `out` (created; files already there are overwritten).

    train, valid: frame counts (>= 0); width, height: pixels. The training split draws from
    `seed` and `arm_poses` (None: every family; see common.synthetic.arms for the rules), the
    validation split from `valid_seed` and `valid_arm_poses`, each None meaning the same as
    the training split's. Frame i of a split is render_frame(split seed, split index, i, ...);
    SET_RECORD says which (per split: seed, arm-pose families, frames; frame size).
    Both pose sets are checked before anything is written (ValueError). `on_frame` is called
    after every frame written (a progress bar; it may raise to stop the build).

    Returns counts for the summary line: frames, people, back_row, grey, single_channel, and
    arm_poses {family: arms drawn in it}, families in ARM_POSE_FAMILIES order.
    """
    out = Path(out)
    train_poses = check_arm_poses(arm_poses)
    valid_poses = train_poses if valid_arm_poses is None else check_arm_poses(valid_arm_poses)
    plan = ((seed, train_poses, train), (seed if valid_seed is None else valid_seed, valid_poses, valid))
    stats = {"frames": 0, "people": 0, "back_row": 0, "grey": 0, "single_channel": 0,
             "arm_poses": dict.fromkeys(ARM_POSE_FAMILIES, 0)}
    for split_index, ((_, json_name), (split_seed, allowed, count)) in enumerate(zip(SPLITS, plan)):
        annotations: list[dict] = []
        for frame_index in range(count):
            frame = render_frame(split_seed, split_index, frame_index, width, height, allowed)
            write_frame_images(out, frame)
            annotations += frame_annotations(frame)
            _count(stats, frame)
            if on_frame is not None:
                on_frame()
        out.mkdir(parents=True, exist_ok=True)  # an empty split still gets its (empty) annotation file
        write_annotation_file(out / json_name, annotations)
    record = {"width": width, "height": height,
              "splits": {split: {"seed": split_seed, "arm_poses": format_arm_poses(allowed).split(","), "frames": count}
                         for (split, _), (split_seed, allowed, count) in zip(SPLITS, plan)}}
    (out / SET_RECORD).write_text(json.dumps(record, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return stats
