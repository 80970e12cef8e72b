"""The perfect generator: render_frame's arm overrides and the oracle pool writer
(common.synthetic.oracle) re-render a synthetic frame with only its elbows and wrists moved."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from common.errors import DataError
from common.posedata.pose import ARMS, NECK, RIGHT_ELBOW, RIGHT_HIP, RIGHT_SHOULDER, RIGHT_WRIST
from common.synthetic import render_frame, write_dataset
from common.synthetic.files import SET_RECORD
from common.synthetic.frame import CHANGED_ARM_POSE
from common.synthetic.layout import RAW_IMAGES_DIR, SEATBELT_MASK_DIR, SPLITS
from common.synthetic.oracle import POOL_ANNOTATIONS, write_oracle_pool

SMALL = {"width": 320, "height": 180}


def _front_person(frame) -> int:
    return frame.rows.index("front")


def test_no_override_draws_the_same_frame():
    plain = render_frame(3, 0, 1, **SMALL)
    for overrides in ({}, {_front_person(plain): np.full((4, 2), np.nan)}):
        again = render_frame(3, 0, 1, **SMALL, arm_overrides=overrides)
        assert np.array_equal(plain.image, again.image) and np.array_equal(plain.seatbelt_mask, again.seatbelt_mask)
        assert np.array_equal(plain.keypoints, again.keypoints) and plain.arm_poses == again.arm_poses


@pytest.mark.parametrize("frame_index", [0, 1, 2, 5])
def test_an_override_moves_that_arm_and_nothing_else(frame_index):
    plain = render_frame(3, 0, frame_index, **SMALL)
    person = _front_person(plain)
    shoulder = plain.keypoints[person, RIGHT_SHOULDER, :2]
    old_elbow, old_wrist = plain.keypoints[person, RIGHT_ELBOW, :2], plain.keypoints[person, RIGHT_WRIST, :2]
    new_elbow = shoulder + np.array([-30.0, 10.0])  # out sideways, the forearm raised
    new_wrist = new_elbow + np.array([-5.0, -35.0])
    overrides = np.full((4, 2), np.nan)
    overrides[0], overrides[1] = new_elbow, new_wrist
    moved = render_frame(3, 0, frame_index, **SMALL, arm_overrides={person: overrides})

    assert np.allclose(moved.keypoints[person, RIGHT_ELBOW, :2], new_elbow, atol=1e-6)
    assert np.allclose(moved.keypoints[person, RIGHT_WRIST, :2], new_wrist, atol=1e-6)
    others = np.ones(moved.keypoints.shape[:2], bool)
    others[person, [RIGHT_ELBOW, RIGHT_WRIST]] = False
    assert np.array_equal(moved.keypoints[others][:, :2], plain.keypoints[others][:, :2])
    assert moved.arm_poses[person] == (CHANGED_ARM_POSE, plain.arm_poses[person][1])
    # Only pixels around the old and the new arm change: the rest of the frame is the same frame.
    difference = np.abs(moved.image.astype(int) - plain.image.astype(int))
    changed = difference.reshape(*difference.shape[:2], -1).max(axis=-1) > 0
    assert changed.sum() > 100
    torso = np.hypot(*(plain.keypoints[person, NECK, :2] - plain.keypoints[person, RIGHT_HIP, :2]))
    joints = np.stack([shoulder, old_elbow, old_wrist, new_elbow, new_wrist])
    low, high = joints.min(axis=0) - 0.5 * torso, joints.max(axis=0) + 0.5 * torso
    ys, xs = np.nonzero(changed)
    assert (xs >= low[0]).all() and (xs <= high[0]).all() and (ys >= low[1]).all() and (ys <= high[1]).all()


def _pose_file(source_dir, path, shift):
    """A generate.py-like annotation file: copy 0 of every training frame with its first
    front-row person's right wrist moved by `shift` px, copy 1 unchanged."""
    source = json.loads((source_dir / SPLITS[0][1]).read_text())["annotations"]
    records = []
    for copy in range(2):
        seen = set()
        for record in (r for r in source if r["label"] == "Person"):
            keypoints = list(record["keypoints"])
            if copy == 0 and record["row"] == "front" and record["image_id"] not in seen:
                seen.add(record["image_id"])
                _, _, wrist = ARMS[0]
                keypoints[3 * wrist] = round(keypoints[3 * wrist] + shift[0], 2)
                keypoints[3 * wrist + 1] = round(keypoints[3 * wrist + 1] + shift[1], 2)
            records.append({"image_id": f"{record['image_id']}_gen{copy}", "label": "Person", "keypoints": keypoints,
                            "source_image_id": record["image_id"]})
    path.write_text(json.dumps({"annotations": records}))
    return source, records


def test_the_oracle_pool_renders_each_pose_on_its_own_frame(tmp_path):
    source_dir = tmp_path / "set"
    write_dataset(source_dir, 3, 1, seed=4, **SMALL, arm_poses=("wheel", "lap"))
    record = json.loads((source_dir / SET_RECORD).read_text())
    assert record["splits"]["train"] == {"seed": 4, "arm_poses": ["wheel", "lap"], "frames": 3}
    _, posed = _pose_file(source_dir, tmp_path / "poses.json", (12.0, -8.0))
    out = write_oracle_pool(source_dir, tmp_path / "poses.json", tmp_path / "pool" / "oracle")

    assert sorted(p.name for p in out.parent.iterdir()) == ["oracle"], "no temporary folder is left"
    written = json.loads((out / POOL_ANNOTATIONS).read_text())["annotations"]
    assert [(r["image_id"], r["source_image_id"]) for r in written] == [(r["image_id"], r["source_image_id"]) for r in posed]
    for mine, theirs in zip(written, posed):
        wanted = np.reshape(theirs["keypoints"], (9, 3))[:, :2]
        got = np.reshape(mine["keypoints"], (9, 3))[:, :2]
        present = np.reshape(mine["keypoints"], (9, 3))[:, 2] > 0
        assert np.abs(got - wanted)[present].max() <= 0.06  # the oracle draws exactly the pose asked for
    for frame in range(3):
        source_id = f"train/frame_{frame:06d}"
        for folder in (RAW_IMAGES_DIR, SEATBELT_MASK_DIR):
            real = cv2.imread(str(source_dir / folder / f"{source_id}.png"), cv2.IMREAD_UNCHANGED)
            same = cv2.imread(str(out / folder / f"{source_id}_gen1.png"), cv2.IMREAD_UNCHANGED)
            assert np.array_equal(real, same), "an unchanged pose is the real frame"
        moved = cv2.imread(str(out / RAW_IMAGES_DIR / f"{source_id}_gen0.png"), cv2.IMREAD_UNCHANGED)
        assert not np.array_equal(moved, cv2.imread(str(source_dir / RAW_IMAGES_DIR / f"{source_id}.png"),
                                                    cv2.IMREAD_UNCHANGED))
    assert any(CHANGED_ARM_POSE in r["arm_poses"] for r in written if r["image_id"].endswith("_gen0"))


def test_the_oracle_refuses_poses_of_another_set_and_writes_nothing(tmp_path):
    source_dir = tmp_path / "set"
    write_dataset(source_dir, 2, 0, seed=4, **SMALL)
    poses = tmp_path / "poses.json"
    _pose_file(source_dir, poses, (5.0, 5.0))
    text = poses.read_text().replace('"source_image_id": "train/frame_000001"', '"source_image_id": "train/frame_000009"')
    poses.write_text(text)
    with pytest.raises(DataError, match="frame_000009"):
        write_oracle_pool(source_dir, poses, tmp_path / "pool" / "oracle")
    assert list((tmp_path / "pool").iterdir()) == []
    (source_dir / SET_RECORD).unlink()
    with pytest.raises(DataError, match=SET_RECORD):
        write_oracle_pool(source_dir, poses, tmp_path / "pool" / "oracle")
