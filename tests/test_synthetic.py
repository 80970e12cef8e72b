"""Tests of common.synthetic: layout, annotation format, flags, masks, determinism, data_sample,
arm-pose restrictions, the validation split's own seed, and the cache of built sets.

Small frames (320 x 180 or less) and few of them keep this file to a few seconds.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from common.posedata.pose import (
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
    ARM_POSE_FAMILIES,
    RAW_IMAGES_DIR,
    SEATBELT_MASK_DIR,
    SPLITS,
    ensure_synthetic_dataset,
    main,
    render_frame,
    torso_height_384,
    write_dataset,
)
from common.synthetic import cache as synthetic_cache
from common.synthetic import files as synthetic_files
from common.synthetic.files import SET_RECORD
from common.synthetic.arms import check_arm_poses, choose_arm_poses

REPO = Path(__file__).resolve().parents[1]
DATA_SAMPLE = REPO / "data_sample"
# The command recorded in data_sample/README.md.
SAMPLE_ARGS = {"train": 24, "valid": 8, "seed": 0, "width": 640, "height": 360}
SMALL = {"width": 320, "height": 180}
TINY = {"width": 192, "height": 108}  # where only people's draws matter, not pixels


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _load(root: Path) -> dict[str, list[dict]]:
    return {split: json.loads((root / name).read_text())["annotations"] for split, name in SPLITS}


def _people(records: list[dict]) -> dict[str, np.ndarray]:
    """image_id -> (P, 9, 3) keypoints of its Person records."""
    grouped: dict[str, list] = {}
    for a in records:
        if a["label"] == "Person":
            grouped.setdefault(a["image_id"], []).append(np.asarray(a["keypoints"], np.float64).reshape(-1, 3))
    return {k: np.stack(v) for k, v in grouped.items()}


def _check_dataset(root: Path) -> None:
    """Seed format and flag rules, for every annotation and file under `root`."""
    for split, records in _load(root).items():
        assert isinstance(records, list) and records
        for index, a in enumerate(records):
            where = f"{split} annotation {index}"
            person = a["label"] == "Person"
            assert set(a) == ({"image_id", "label", "keypoints", "row", "arm_poses"} if person
                              else {"image_id", "label", "keypoints"}), where
            if person:
                assert a["row"] in ("front", "back") and len(a["arm_poses"]) == 2, where
                assert set(a["arm_poses"]) <= set(ARM_POSE_FAMILIES), where
            assert isinstance(a["image_id"], str) and "\\" not in a["image_id"], where
            assert a["label"] in ("Person", "Steering_Wheel"), where
            assert len(a["keypoints"]) == 3 * NUM_KEYPOINTS, where
            assert all(isinstance(v, (int, float)) for v in a["keypoints"]), where
        for image_id, people in _people(records).items():
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
        [RAW_IMAGES_DIR, SEATBELT_MASK_DIR, SET_RECORD] + [name for _, name in SPLITS])
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
    assert len(files) == 2 + 2 * 3 + 1  # annotation files, images and masks, the set's record
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


# --------------------------------------------------------------------------------------------
# Arm poses under control (common.synthetic.arms)
# --------------------------------------------------------------------------------------------

# Which families may be drawn for which arm, written out here rather than taken from the code.
_BACK_ROW_FAMILIES = {"lap", "raised", "phone", "cross"}
_EVERY_FRONT_ARM = {"lap", "raised", "phone", "cross"}


def _expected_families(row: str, driver: bool, door_side: bool) -> set[str]:
    if row == "back":
        return _BACK_ROW_FAMILIES
    return _EVERY_FRONT_ARM | ({"wheel"} if driver else set()) | ({"window"} if door_side else {"reach"})


def _front_row_arm_poses(frames) -> list[str]:
    return [pose for f in frames for row, arms in zip(f.rows, f.arm_poses) if row == "front" for pose in arms]


def test_arm_pose_restriction_holds_and_the_default_draws_every_family():
    default = [render_frame(6, 0, i, **TINY) for i in range(30)]
    narrow = [render_frame(6, 0, i, **TINY, arm_poses=["wheel", "lap"]) for i in range(30)]
    assert set(_front_row_arm_poses(default)) == set(ARM_POSE_FAMILIES)
    assert set(_front_row_arm_poses(narrow)) == {"wheel", "lap"}
    for f in narrow:
        front = [arms for row, arms in zip(f.rows, f.arm_poses) if row == "front"]
        assert all("wheel" not in arms for arms in front[1:]), f"{f.image_id}: only the driver (first) holds the wheel"
        assert all(arms == ("lap", "lap") for row, arms in zip(f.rows, f.arm_poses) if row == "back"), f.image_id
    # A restriction changes the arm-pose draws and nothing else: a front-row-only frame whose
    # people drew allowed families anyway is the same frame, any other is a different one.
    same_poses = [a.arm_poses == b.arm_poses for a, b in zip(default, narrow) if "back" not in a.rows]
    same_image = [np.array_equal(a.image, b.image) for a, b in zip(default, narrow) if "back" not in a.rows]
    assert same_poses == same_image and any(same_poses) and not all(same_poses)


@pytest.mark.parametrize("families", [None, ("raised", "cross", "reach", "window"), ("lap", "phone", "wheel")])
def test_each_arm_draws_only_allowed_families_that_apply_to_it(families):
    allowed = check_arm_poses(families)
    rng = np.random.default_rng(0)
    drawn: set[tuple] = set()
    for row, driver in (("front", True), ("front", False), ("back", False)):
        for outboard in (-1, 1):
            for _ in range(200):
                poses = choose_arm_poses(row, driver, outboard, allowed, rng)
                assert poses.count("phone") <= 1, "one hand holds the phone"
                for side, pose in zip((-1, 1), poses):
                    kind = (row, driver, side == outboard)
                    assert pose in allowed and pose in _expected_families(*kind), (kind, pose)
                    drawn.add(kind + (pose,))
    for row, driver in (("front", True), ("front", False), ("back", False)):
        for door_side in (False, True):
            for family in allowed & _expected_families(row, driver, door_side):
                assert (row, driver, door_side, family) in drawn, "every allowed family that applies occurs"


@pytest.mark.parametrize("option, families, message", [
    ("--arm-poses", "wheel,lapp", "unknown arm-pose family lapp"),
    ("--arm-poses", "wheel", "no family applies to the front passenger's door-side arm"),
    ("--arm-poses", "reach,window", "no family applies to a back-row passenger's arm"),
    ("--arm-poses", "raised,phone", "'phone' needs 'lap'"),
    ("--valid-arm-poses", "window", "no family applies to the driver's inner arm"),
])
def test_unknown_and_impossible_arm_poses_are_refused_in_one_line(tmp_path, capsys, option, families, message):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        main(["--out", str(out), "--train", "1", "--valid", "1", option, families])
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1 and option in errors[0] and message in errors[0], errors
    assert not out.exists(), "refused before writing anything"
    with pytest.raises(ValueError, match=re.escape(message)):
        render_frame(0, 0, 0, **SMALL, arm_poses=families.split(","))


def test_restricted_arm_poses_same_seed_same_bytes(tmp_path, capsys):
    runs = [tmp_path / "first", tmp_path / "second"]
    for out in runs:
        main(["--out", str(out), "--train", "3", "--valid", "1", "--seed", "6", "--arm-poses", "wheel,lap",
              "--width", "320", "--height", "180"])
        summary = capsys.readouterr().out
        counts = summary.split("arm poses: ")[1].split(")")[0]
        assert {entry.split()[0] for entry in counts.split(", ")} <= {"wheel", "lap"}, summary
    assert _files(runs[0]) == _files(runs[1])
    default = tmp_path / "default"
    write_dataset(default, 3, 1, seed=6, **SMALL)
    train_json = SPLITS[0][1]
    assert _files(runs[0])[train_json] != _files(default)[train_json], "the restriction changes the arms"


# --------------------------------------------------------------------------------------------
# A held-out validation split: its own seed and arm poses
# --------------------------------------------------------------------------------------------


def _split_files(files: dict[str, bytes], split_index: int) -> dict[str, bytes]:
    split, json_name = SPLITS[split_index]
    return {k: v for k, v in files.items() if f"/{split}/" in f"/{k}" or k == json_name}


def test_valid_seed_draws_new_validation_frames_and_keeps_training_frames(tmp_path):
    same, held_out, valid_only, other_poses = (tmp_path / n for n in ("same", "held_out", "valid_only", "poses"))
    write_dataset(same, 2, 2, seed=4, **SMALL)
    main(["--out", str(held_out), "--train", "2", "--valid", "2", "--seed", "4", "--valid-seed", "9",
          "--width", "320", "--height", "180"])
    write_dataset(valid_only, 0, 2, seed=9, **SMALL)
    main(["--out", str(other_poses), "--train", "2", "--valid", "2", "--seed", "4", "--arm-poses", "raised,cross",
          "--valid-arm-poses", ",".join(ARM_POSE_FAMILIES), "--width", "320", "--height", "180"])
    same_files, held_files = _files(same), _files(held_out)
    assert _split_files(held_files, 0) == _split_files(same_files, 0), "training frames unchanged"
    valid_names = _split_files(same_files, 1)
    assert len(valid_names) == 1 + 2 * 2
    assert all(held_files[name] != same_files[name] for name in valid_names if RAW_IMAGES_DIR in name or "json" in name)
    assert _split_files(held_files, 1) == _split_files(_files(valid_only), 1), "valid frame i = rng([9, 1, i])"
    poses_files = _files(other_poses)
    assert _split_files(poses_files, 1) == _split_files(same_files, 1), "--valid-arm-poses all = the default's"
    assert poses_files[SPLITS[0][1]] != same_files[SPLITS[0][1]]


# --------------------------------------------------------------------------------------------
# The cache of built sets (common.synthetic.cache)
# --------------------------------------------------------------------------------------------

CACHE_SET = {"train": 2, "valid": 1, "seed": 1, "valid_seed": 2, **TINY}
CACHE_NAME = "train2-s1-all_valid1-s2-all_192x108_gen2"


def _layout(train: int, valid: int) -> list[str]:
    """Relative paths of every file write_dataset writes for these frame counts."""
    ids = [f"{split}/frame_{i:06d}" for (split, _), count in zip(SPLITS, (train, valid)) for i in range(count)]
    return sorted([f"{folder}/{image_id}.png" for folder in (RAW_IMAGES_DIR, SEATBELT_MASK_DIR) for image_id in ids]
                  + [name for _, name in SPLITS] + [SET_RECORD])


def _mtimes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")}


def test_cache_builds_once_then_reuses_the_folder(tmp_path):
    root, lines = tmp_path / "cache", []
    path = ensure_synthetic_dataset(root, **CACHE_SET, arm_poses=["lap", "wheel"], announce=lines.append)
    assert path == root / "train2-s1-wheel+lap_valid1-s2-wheel+lap_192x108_gen2"
    assert len(lines) == 1 and str(path) in lines[0] and "about" in lines[0], lines
    direct = tmp_path / "direct"
    write_dataset(direct, 2, 1, 1, 192, 108, arm_poses=["wheel", "lap"], valid_seed=2)
    assert sorted(_files(path)) == _layout(2, 1) and _files(path) == _files(direct), "the seed's layout"
    assert [p.name for p in root.iterdir()] == [path.name], "no temporary folder left"
    before = _mtimes(path)
    assert ensure_synthetic_dataset(root, **CACHE_SET, arm_poses=["wheel", "lap"], announce=lines.append) == path
    assert len(lines) == 1 and _mtimes(path) == before, "found, not rebuilt"
    with pytest.raises(ValueError, match="no family applies"):
        ensure_synthetic_dataset(tmp_path / "refused", **CACHE_SET, arm_poses=["window"])
    assert not (tmp_path / "refused").exists()


def test_cache_build_that_raises_leaves_nothing_and_the_next_call_builds(tmp_path, monkeypatch):
    root, lines, during_build = tmp_path / "cache", [], []
    real_render = synthetic_files.render_frame

    def interrupted(seed, split_index, frame_index, *args, **kwargs):
        if split_index == 0 and frame_index == 1:  # frame 0 is on disk: stop like Ctrl-C
            during_build.extend(p for p in root.rglob("*.png"))
            raise KeyboardInterrupt
        return real_render(seed, split_index, frame_index, *args, **kwargs)

    monkeypatch.setattr(synthetic_files, "render_frame", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ensure_synthetic_dataset(root, **CACHE_SET, announce=lines.append)
    assert during_build and all(p.relative_to(root).parts[0].startswith(".") for p in during_build)
    assert list(root.iterdir()) == [], "the interrupted build removed its temporary folder"
    monkeypatch.setattr(synthetic_files, "render_frame", real_render)
    path = ensure_synthetic_dataset(root, **CACHE_SET, announce=lines.append)
    assert path.name == CACHE_NAME and sorted(_files(path)) == _layout(2, 1) and len(lines) == 2


# Builds CACHE_SET under argv[1]; after its first frame it touches argv[2] and waits to be killed.
_BUILD_UNTIL_KILLED = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from common.synthetic import cache, files
    real_render = files.render_frame
    def render_then_wait(seed, split_index, frame_index, *args, **kwargs):
        if split_index == 0 and frame_index == 1:
            Path(sys.argv[2]).touch()
            time.sleep(120)
        return real_render(seed, split_index, frame_index, *args, **kwargs)
    files.render_frame = render_then_wait
    cache.ensure_synthetic_dataset(Path(sys.argv[1]), train=2, valid=1, seed=1, valid_seed=2, width=192, height=108)
""")


def test_cache_build_killed_halfway_is_redone_by_the_next_call(tmp_path):
    root, halfway = tmp_path / "cache", tmp_path / "halfway"
    process = subprocess.Popen([sys.executable, "-c", _BUILD_UNTIL_KILLED, str(root), str(halfway)], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not halfway.exists():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the build never got halfway"
            time.sleep(0.05)
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.communicate()
    left = list(root.iterdir())
    assert len(left) == 1 and left[0].name.startswith(".") and f"-{process.pid}-" in left[0].name, left
    assert (left[0] / RAW_IMAGES_DIR / "train" / "frame_000000.png").is_file(), "killed halfway through"
    lines = []
    path = ensure_synthetic_dataset(root, **CACHE_SET, announce=lines.append)
    assert len(lines) == 1, "rebuilt"
    assert [p.name for p in root.iterdir()] == [CACHE_NAME] and sorted(_files(path)) == _layout(2, 1)


def test_abandoned_builds_of_dead_processes_are_removed(tmp_path):
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    host = synthetic_cache._host()
    dead = tmp_path / f".{CACHE_NAME}.building-{host}-{finished.pid}-0a1b"
    alive = tmp_path / f".{CACHE_NAME}.building-{host}-{os.getpid()}-0a1b"
    other_host = tmp_path / f".{CACHE_NAME}.building-{host}x-{finished.pid}-0a1b"
    complete = tmp_path / CACHE_NAME
    for folder in (dead, alive, other_host, complete):
        (folder / RAW_IMAGES_DIR).mkdir(parents=True)
    assert synthetic_cache.remove_abandoned_builds(tmp_path) == [dead]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in (alive, other_host, complete))


def test_cache_loser_of_a_race_returns_the_winners_folder(tmp_path, monkeypatch):
    root, real_write = tmp_path / "cache", synthetic_cache.write_dataset

    def another_process_finishes_first(out, *args, **kwargs):
        real_write(out, *args, **kwargs)
        winner = root / CACHE_NAME
        real_write(winner, *args, **kwargs)
        (winner / "from_the_winner").touch()

    monkeypatch.setattr(synthetic_cache, "write_dataset", another_process_finishes_first)
    path = ensure_synthetic_dataset(root, **CACHE_SET, announce=lambda line: None)
    assert path == root / CACHE_NAME and (path / "from_the_winner").is_file(), "the first rename stays"
    assert [p.name for p in root.iterdir()] == [CACHE_NAME], "the loser's copy is discarded"
