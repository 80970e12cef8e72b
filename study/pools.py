"""Frames rendered once, ahead of the conditions, and the keypoint subsets the study reports.

The pools are folders in the seed's layout written by `generate.py dataset` (the GAN's frames)
and by `oracle_main` below (the synthetic renderer's own frames in exactly the GAN's poses: the
perfect generator). Every seed of every condition draws from the same pools, so a difference
between conditions is never a difference between two renderings of the poses.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from common.posedata.augment import torso_height
from common.training.cli import OneLineParser, run_script
from common.posedata.dataset import PERSON_LABEL, PoseDataset, read_annotation_list
from common.posedata.pose import ARMS, FRONT_ROW_TORSO_HEIGHT, scale_for

ORACLE_PROG = "python -m study.pools"


def _oracle_options(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = OneLineParser(prog=ORACLE_PROG, description="Re-render a synthetic training set's frames in the poses of "
                           "a `generate.py dataset` folder with the synthetic renderer (the study's oracle pool).")
    parser.add_argument("--source-set", type=Path, required=True, help="the synthetic set the poses vary")
    parser.add_argument("--poses", type=Path, required=True, help="the annotation file of the generated frames")
    parser.add_argument("--out", type=Path, required=True, help="the oracle pool's folder (written whole, or not at all)")
    return parser.parse_args(argv), []


def _write_oracle(options: argparse.Namespace, messages: list[str] = ()) -> Path:
    from common.synthetic.oracle import write_oracle_pool

    if (options.out / "Raw_Images").is_dir():
        print(f"oracle pool already complete: {options.out}")
        return options.out
    written = write_oracle_pool(options.source_set, options.poses, options.out)
    print(f"oracle pool: {written}")
    return written


def oracle_main(argv: Sequence[str] | None = None) -> int:
    """`python -m study.pools --source-set DIR --poses FILE --out DIR` (exit codes: common.training.cli)."""
    return run_script(ORACLE_PROG, _oracle_options, _write_oracle, argv)


# --------------------------------------------------------------------------- keypoint subsets


def _people_fields(annotation_file: Path, dataset: PoseDataset, field: str) -> list[list]:
    """Per sample of `dataset` (its order), per person (file order), the annotation's `field` (None when absent)."""
    by_image: dict[str, list] = {}
    for annotation in read_annotation_list(annotation_file):
        if isinstance(annotation, dict) and annotation.get("label") == PERSON_LABEL:
            image_id = annotation["image_id"].replace("\\", "/").strip("/")
            by_image.setdefault(image_id, []).append(annotation.get(field))
    return [by_image.get(image_id, []) for image_id in dataset.image_ids]


def new_pose_arm_masks(dataset: PoseDataset, trained_families: Sequence[str]) -> list[np.ndarray]:
    """Per sample, bool (P, 9): the elbows and wrists of people whose arms the arm augmentation
    changes (torso above the front-row height at this input size) in a family absent from
    `trained_families` (the annotations' `arm_poses` field: [right arm, left arm])."""
    return front_row_arm_masks(dataset, lambda family: family not in trained_families)


def trained_family_arm_masks(dataset: PoseDataset, trained_families: Sequence[str]) -> list[np.ndarray]:
    """As new_pose_arm_masks, for the arms in one of `trained_families` (the poses trained on)."""
    return front_row_arm_masks(dataset, lambda family: family in trained_families)


def front_row_arm_masks(dataset: PoseDataset, chosen: Callable[[str], bool]) -> list[np.ndarray]:
    """Per sample, bool (P, 9): the elbows and wrists of front-row people (torso above the
    front-row height at this input size) whose arm's family (the annotations' `arm_poses`:
    [right arm, left arm]) is `chosen`."""
    families = _people_fields(dataset.annotation_file, dataset, "arm_poses")
    front_row = FRONT_ROW_TORSO_HEIGHT * scale_for(dataset.image_size)
    masks = []
    for keypoints, people in zip(dataset.keypoints, families):
        mask = np.zeros(keypoints.shape[:2], dtype=bool)
        for person, (points, arm_poses) in enumerate(zip(keypoints, people)):
            torso = torso_height(points)
            if arm_poses is None or torso is None or torso <= front_row:
                continue
            for (_, elbow, wrist), family in zip(ARMS, arm_poses):
                if chosen(family):
                    mask[person, [elbow, wrist]] = True
        masks.append(mask)
    return masks


def changed_keypoint_masks(dataset: PoseDataset, source: PoseDataset, tolerance: float = 0.05) -> list[np.ndarray]:
    """Per sample of a pool, bool (P, 9): the keypoints that differ from its source frame's
    (by more than `tolerance` input pixels, or present in one and missing in the other)."""
    index_of = {image_id: index for index, image_id in enumerate(source.image_ids)}
    masks = []
    for keypoints, source_id in zip(dataset.keypoints, source_image_ids(dataset)):
        original = source.keypoints[index_of[source_id]]
        differs = np.abs(keypoints - original) > tolerance
        presence = np.isnan(keypoints) != np.isnan(original)
        masks.append((differs.any(axis=-1) & ~np.isnan(keypoints).any(axis=-1)) | presence.any(axis=-1))
    return masks


def source_image_ids(dataset: PoseDataset) -> list[str]:
    """Per sample of a pool, the id of the training frame it varies (its people's `source_image_id`)."""
    return [people[0] for people in _people_fields(dataset.annotation_file, dataset, "source_image_id")]


def subset_of(masks: list[np.ndarray]):
    """evaluate()'s subset function for per-sample (P, 9) masks: bool (B, Pmax, 9) for a batch."""

    def select(batch: dict) -> torch.Tensor:
        people = batch["keypoints"].shape[1]
        out = torch.zeros(len(batch["index"]), people, masks[0].shape[-1] if masks else 9, dtype=torch.bool)
        for row, index in enumerate(batch["index"].tolist()):
            mask = torch.from_numpy(masks[index])
            out[row, : mask.shape[0]] = mask
        return out

    return select


def pool_record(pool_dir: Path) -> dict:
    """What generate.py recorded of a pool's command (its arguments), for the study's config."""
    record = pool_dir / ".generate" / "command.json"
    return json.loads(record.read_text(encoding="utf-8")) if record.is_file() else {}


if __name__ == "__main__":
    raise SystemExit(oracle_main())
