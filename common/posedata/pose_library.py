"""A library of arm poses for `--arm-augment library`: the arms of another set's people.

An arm is its elbow and wrist as offsets from its shoulder in torso heights (neck to hips),
mirrored so that +x points away from the body (common.posedata.augment.arm_offsets), so an arm of any
person, either side, at any distance from the camera fits any other person. The library is
read from an annotation file in the seed's format: every person whose `row` is "front" (all
people when the file has no rows), every arm with shoulder, elbow and wrist labelled (v > 0).
The poses a library holds are what the augmentation may draw: a set with the activities the
network should learn (the study uses its judge's own frames, never a held-out set).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from common.posedata.augment import arm_offsets
from common.posedata.dataset import PERSON_LABEL, read_annotation_list
from common.errors import DataError
from common.posedata.pose import NUM_KEYPOINTS


def load_arm_pose_library(annotation_file: Path) -> np.ndarray:
    """(N, 2, 2) float64 arms ([elbow, wrist] x (x, y)) of `annotation_file`'s people (see the
    module doc); DataError (one line naming the file and the record) for a malformed record or
    a file without a single complete arm."""
    annotations = read_annotation_list(Path(annotation_file))
    people = [(number, record) for number, record in enumerate(annotations)
              if isinstance(record, dict) and record.get("label") == PERSON_LABEL]
    has_rows = any("row" in record for _, record in people)
    arms = []
    for number, record in people:
        if has_rows and record.get("row") != "front":
            continue
        try:
            values = np.asarray(record["keypoints"], dtype=np.float64).reshape(NUM_KEYPOINTS, 3)
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{annotation_file}: annotation {number}: 'keypoints' must be {NUM_KEYPOINTS} x "
                            "(x, y, v) numbers") from None
        points = np.where(values[:, 2:] > 0, values[:, :2], np.nan)
        arms += arm_offsets(points)
    if not arms:
        raise DataError(f"{annotation_file}: no arm with shoulder, elbow and wrist labelled: nothing for "
                        "--arm-augment library to draw")
    return np.stack(arms)
