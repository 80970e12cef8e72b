"""Generated samples added or swapped in, frames rendered ahead of training, plausible arm
poses, frames that do not depend on their batch, and keypoint subsets in the metrics."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from common.posedata.augment import (
    PLAUSIBLE_ELBOW_FLEXION_DEGREES,
    PLAUSIBLE_FOREARM_PER_TORSO,
    PLAUSIBLE_HEAD_ABOVE_NECK,
    PLAUSIBLE_HEAD_RADIUS,
    PLAUSIBLE_SHOULDER_DEGREES,
    PLAUSIBLE_SHORTEST,
    PLAUSIBLE_UPPER_ARM_PER_TORSO,
    _inside_polygon,
    arm_augment,
    torso_height,
)
from common.posedata.dataset import PoseDataset, WithGeneratedFrames, collate_poses
from common.errors import DataError
from common.models.factory import build_generator, generator_config
from common.models.init import init_weights
from common.posedata.pose import ARMS, LEFT_HIP, LEFT_SHOULDER, NECK, NUM_KEYPOINTS, RIGHT_HIP, RIGHT_SHOULDER
from common.models.rendering import GeneratedSamples
from nadsnet_pvt.batch import build_training_batch, geometric_generator
from nadsnet_pvt.metrics import ValidationMetrics
from test_train_nadsnet import SIZE, StubGenerator, make_data, recipe_batch, run_options

pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------- plausible arm poses


def front_row_person(size: int = 384) -> np.ndarray:
    """One seated person (9, 2) with a 150 px torso at a 384 px input."""
    person = np.full((NUM_KEYPOINTS, 2), np.nan)
    person[NECK] = (190, 120)
    person[RIGHT_SHOULDER], person[LEFT_SHOULDER] = (150, 135), (230, 135)
    person[RIGHT_HIP], person[LEFT_HIP] = (170, 270), (210, 270)
    person[[0, 1, 5, 6]] = (150, 200)
    return person * size / 384


def _angle(a: np.ndarray, b: np.ndarray) -> float:
    return math.degrees(math.acos(np.clip(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b), -1, 1)))


@pytest.mark.parametrize("aspect", [1.0, 16 / 9])
def test_plausible_arms_stay_within_human_limits_inside_the_frame_and_off_head_and_torso(aspect):
    person = front_row_person()
    changed = 0
    for seed in range(200):
        moved = arm_augment(person[None], "plausible", np.random.default_rng(seed), 384, pixel_aspect=aspect)[0]
        assert np.array_equal(moved[[NECK, RIGHT_SHOULDER, LEFT_SHOULDER, RIGHT_HIP, LEFT_HIP]],
                              person[[NECK, RIGHT_SHOULDER, LEFT_SHOULDER, RIGHT_HIP, LEFT_HIP]])
        square = moved * [aspect, 1.0]
        torso = torso_height(square)
        head = square[NECK] + [0, -PLAUSIBLE_HEAD_ABOVE_NECK * torso]
        body = square[[RIGHT_SHOULDER, LEFT_SHOULDER, LEFT_HIP, RIGHT_HIP]]
        for (shoulder, elbow, wrist), away in zip(ARMS, (-1, 1)):
            if np.allclose(moved[[elbow, wrist]], person[[elbow, wrist]]):
                continue
            changed += 1
            upper, fore = square[elbow] - square[shoulder], square[wrist] - square[elbow]
            assert PLAUSIBLE_SHORTEST * PLAUSIBLE_UPPER_ARM_PER_TORSO * torso - 1e-6 <= np.linalg.norm(upper) \
                <= PLAUSIBLE_UPPER_ARM_PER_TORSO * torso + 1e-6
            assert np.linalg.norm(fore) <= PLAUSIBLE_FOREARM_PER_TORSO * torso + 1e-6
            # the upper arm's angle from hanging down, positive away from the body
            signed = math.degrees(math.atan2(away * upper[0], upper[1]))
            low, high = PLAUSIBLE_SHOULDER_DEGREES
            assert low - 1e-6 <= signed <= high + 1e-6
            assert _angle(upper, fore) <= PLAUSIBLE_ELBOW_FLEXION_DEGREES[1] + 1e-6
            for joint in (moved[elbow], moved[wrist]):
                assert (joint >= 0).all() and (joint < 384).all()
            for joint in (square[elbow], square[wrist]):
                assert np.hypot(*(joint - head)) > PLAUSIBLE_HEAD_RADIUS * torso
            assert not _inside_polygon(square[wrist], body)
    assert changed > 300  # nearly every arm finds a pose


def test_plausible_leaves_small_people_and_missing_shoulders_alone():
    small = front_row_person() * 0.3  # a torso of 45 px: the back row
    assert np.array_equal(arm_augment(small[None], "plausible", np.random.default_rng(0), 384)[0], small,
                          equal_nan=True)
    no_shoulder = front_row_person()
    no_shoulder[RIGHT_SHOULDER] = np.nan
    moved = arm_augment(no_shoulder[None], "plausible", np.random.default_rng(0), 384)[0]
    assert np.array_equal(moved[[0, 1]], no_shoulder[[0, 1]])
    assert not np.array_equal(moved[[5, 6]], no_shoulder[[5, 6]])


# --------------------------------------------------------------------------- arm poses from a library


def person_record(points: np.ndarray, row: str | None = None, hidden: tuple[int, ...] = ()) -> dict:
    values = [[*point, 0 if joint in hidden else 2] for joint, point in enumerate(points)]
    record = {"image_id": "f", "label": "Person", "keypoints": [v for triple in values for v in triple]}
    return record if row is None else {**record, "row": row}


def write_annotations(path, records: list[dict]):
    path.write_text(json.dumps({"annotations": records}))
    return path


@pytest.mark.parametrize("aspect", [1.0, 16 / 9])
def test_library_arms_are_the_library_s_arms_on_this_person_s_shoulders_and_scale(tmp_path, aspect):
    """A library of one right arm (its left arm unlabelled), read from a person twice as large:
    drawn onto a front-row person, the right arm is that arm at this person's scale and the left
    arm its mirror image (measured in the frame's square pixels)."""
    from common.posedata.pose_library import load_arm_pose_library

    person = front_row_person()  # symmetric about x = 190
    person[[1, 0]] = (120, 180), (135, 230)  # right elbow and wrist
    large = (person - person[NECK]) * 2 + (400, 300)
    file = write_annotations(tmp_path / "poses.json", [person_record(large, "front", hidden=(5, 6)),
                                                       person_record(large * 3, "back")])
    library = load_arm_pose_library(file)
    assert library.shape == (1, 2, 2)
    square = np.array([aspect, 1.0])
    target = front_row_person()
    moved = arm_augment((target / square)[None], "library", np.random.default_rng(0), 384, pixel_aspect=aspect,
                        library=library)[0] * square
    np.testing.assert_allclose(moved[[1, 0]], person[[1, 0]], atol=1e-9)
    mirrored = person[[1, 0]] * [-1, 1] + [2 * 190, 0]
    np.testing.assert_allclose(moved[[5, 6]], mirrored, atol=1e-9)
    np.testing.assert_array_equal(moved[[2, 3, 4, 7, 8]], target[[2, 3, 4, 7, 8]])


def test_library_draws_stay_in_the_frame_and_refuse_what_cannot_work(tmp_path):
    from common.posedata.pose_library import load_arm_pose_library

    far = np.array([[[3.0, 0.0], [6.0, 0.0]]])  # an arm six torso heights long: never inside the frame
    person = front_row_person()
    kept = arm_augment(person[None], "library", np.random.default_rng(0), 384, library=far)[0]
    assert np.array_equal(kept, person, equal_nan=True)
    with pytest.raises(ValueError, match="library"):
        arm_augment(person[None], "library", np.random.default_rng(0), 384)
    empty = write_annotations(tmp_path / "empty.json", [person_record(front_row_person(), hidden=(0, 1, 5, 6))])
    with pytest.raises(DataError, match="no arm with shoulder, elbow and wrist labelled"):
        load_arm_pose_library(empty)
    broken = write_annotations(tmp_path / "broken.json", [{"label": "Person", "image_id": "f", "keypoints": [1, 2]}])
    with pytest.raises(DataError, match="annotation 0: 'keypoints'"):
        load_arm_pose_library(broken)


@pytest.mark.parametrize("flags", [["--arm-augment", "library"], ["--arm-augment", "plausible", "--arm-pose-library", "x"]])
def test_the_library_flag_and_mode_go_together(flags):
    from common.errors import OptionError
    from nadsnet_pvt.options import parse_options

    with pytest.raises(OptionError, match="--arm-pose-library: goes with --arm-augment library"):
        parse_options(["--preset", "cpu", *flags], False)


# --------------------------------------------------------------------------- added, not swapped


def test_added_generated_samples_keep_every_real_sample():
    batch = recipe_batch(4)
    samples = GeneratedSamples(StubGenerator(), "cpu", eval_mode=True)
    result = build_training_batch(batch, 2, samples, "cpu", False, None, mode="add")
    assert result.images.shape[0] == 6
    assert torch.equal(result.images[:4], batch["image"])  # all four real samples, untouched
    assert result.generated.tolist() == [False] * 4 + [True] * 2
    assert torch.allclose(result.label_keypoints[:4].nan_to_num(-1), batch["keypoints"].nan_to_num(-1))
    assert torch.allclose(result.label_keypoints[4:].nan_to_num(-1), batch["augmented_keypoints"][:2].nan_to_num(-1))
    assert torch.equal(result.seatbelt[4:], batch["seatbelt"][:2])
    replaced = build_training_batch(batch, 2, samples, "cpu", False, None, mode="replace")
    assert replaced.images.shape[0] == 4 and torch.equal(replaced.images[2:], batch["image"][2:])
    assert torch.equal(replaced.images[:2], result.images[4:])


def test_added_samples_get_their_own_geometric_draws_and_the_real_ones_keep_theirs():
    batch = recipe_batch(4)
    samples = GeneratedSamples(StubGenerator(), "cpu", eval_mode=True)
    plain = build_training_batch(batch, 0, None, "cpu", False, geometric_generator(3, 1, 0), smallest_tenths=3)
    added = build_training_batch(batch, 2, samples, "cpu", False, geometric_generator(3, 1, 0), smallest_tenths=3,
                                 mode="add")
    assert torch.equal(added.images[:4], plain.images)  # the real samples' draws do not move
    assert added.images.shape[0] == 6


def test_frames_rendered_ahead_bring_their_own_pose_and_belt():
    batch = recipe_batch(4)
    batch["variant_image"] = torch.full((4, 3, SIZE, SIZE), 0.5)
    batch["variant_seatbelt"] = torch.zeros(4, 1, SIZE, SIZE)
    batch["variant_keypoints"] = batch["keypoints"] + 3.0
    result = build_training_batch(batch, 1, None, "cpu", False, None, mode="add")
    assert result.images.shape[0] == 5
    assert torch.equal(result.images[4], batch["variant_image"][0])
    assert torch.equal(result.seatbelt[4], batch["variant_seatbelt"][0])
    assert torch.allclose(result.label_keypoints[4].nan_to_num(-1), batch["variant_keypoints"][0].nan_to_num(-1))


def _pool(tiny_dataset_dir, tmp_path, copies: int = 3):
    """A real set of 4 frames and a pool of `copies` shifted frames per real frame."""
    data, train_file, valid_file = make_data(tiny_dataset_dir, 4, 2)
    real = PoseDataset(train_file, data.images_dir, data.masks_dir, image_size=SIZE)
    pool = tmp_path / "pool"
    (pool / "Raw_Images").mkdir(parents=True)
    (pool / "Seatbelt_Mask").mkdir()
    annotations = []
    for index, image_id in enumerate(real.image_ids):
        for copy in range(copies):
            new_id = f"{image_id}_gen{copy}"
            for folder, path in (("Raw_Images", real.image_paths[index]), ("Seatbelt_Mask", real.mask_paths[index])):
                (pool / folder / f"{new_id}.png").write_bytes(path.read_bytes())
            for record in json.loads(train_file.read_text())["annotations"]:
                if record["image_id"] == image_id:
                    values = list(record["keypoints"])
                    values[0] += copy + 1  # the right wrist moves by copy + 1 source pixels
                    annotations.append({"image_id": new_id, "label": "Person", "keypoints": values,
                                        "source_image_id": image_id})
    pool_file = pool / "Train_keypoint_Annotation_sample.json"
    pool_file.write_text(json.dumps({"annotations": annotations}))
    return data, train_file, valid_file, real, pool_file


def test_each_real_sample_draws_one_of_its_own_variants_by_the_run_seed(tiny_dataset_dir, tmp_path):
    data, _, _, real, pool_file = _pool(tiny_dataset_dir, tmp_path)
    paired_set = WithGeneratedFrames(real, pool_file, seed=5)
    picks = set()
    for epoch in range(4):
        paired_set.set_epoch(epoch)
        for index in range(len(real)):
            sample = paired_set[index]
            assert sample["variant_id"].rsplit("_gen", 1)[0] == real.image_ids[index]
            picks.add(sample["variant_id"])
            again = paired_set[index]
            assert again["variant_id"] == sample["variant_id"]
    assert len(picks) > len(real)  # different epochs draw different variants
    paired_set.set_epoch(0)
    other = WithGeneratedFrames(real, pool_file, seed=6)
    assert [paired_set[i]["variant_id"] for i in range(4)] != [other[i]["variant_id"] for i in range(4)]
    batch = collate_poses([paired_set[0], paired_set[1]])
    assert batch["variant_image"].shape == (2, 3, SIZE, SIZE)
    assert batch["variant_keypoints"].shape == batch["keypoints"].shape


def test_a_pool_without_a_training_frame_is_refused_naming_it(tiny_dataset_dir, tmp_path):
    data, _, _, real, pool_file = _pool(tiny_dataset_dir, tmp_path)
    records = json.loads(pool_file.read_text())["annotations"]
    kept = [r for r in records if r["source_image_id"] != real.image_ids[2]]
    pool_file.write_text(json.dumps({"annotations": kept}))
    with pytest.raises(DataError, match=f"source_image_id' {real.image_ids[2]!r}"):
        WithGeneratedFrames(real, pool_file)
    broken = [dict(r) for r in records]
    del broken[0]["source_image_id"]
    pool_file.write_text(json.dumps({"annotations": broken}))
    with pytest.raises(DataError, match="annotation 0: field 'source_image_id'"):
        WithGeneratedFrames(real, pool_file)


def test_training_adds_frames_rendered_ahead_and_reports_its_own_frames(tiny_dataset_dir, tmp_path, capsys):
    from nadsnet_pvt.train import train

    data, train_file, valid_file, real, pool_file = _pool(tiny_dataset_dir, tmp_path)
    checkpoints = tmp_path / "run"
    options, messages = run_options(data, train_file, valid_file, checkpoints, "--generated", "add",
                                    "--generated-frames", str(pool_file), "--train-eval-frames", "3",
                                    "--max-iterations", "2")
    train(options, messages)
    log = (checkpoints / "nadsnet_log.txt").read_text()
    assert "added to the real samples" in log and "frames rendered ahead" in log
    record = json.loads((checkpoints / "nadsnet_metrics.jsonl").read_text().splitlines()[-1])
    assert {"train_frames_pckt", "train_frames_pckt_arms", "train_frames_seatbelt_iou"} <= set(record)


# --------------------------------------------------------------------------- frames independent of their batch


def test_a_pose_renders_to_the_same_frame_alone_and_among_others():
    torch.manual_seed(0)
    generator = build_generator(generator_config(4, SIZE))
    init_weights(generator, gain=0.02)
    generator.train()
    with torch.no_grad():  # running statistics that differ from any one batch's
        for _ in range(3):
            generator(torch.rand(4, 26, SIZE, SIZE))
    batch = recipe_batch(8)
    keypoints, seatbelt = batch["augmented_keypoints"], batch["seatbelt"]
    stored = GeneratedSamples(generator, "cpu", eval_mode=True)
    alone = stored.render(keypoints[:1], seatbelt[:1], SIZE)
    among = stored.render(keypoints, seatbelt, SIZE)
    assert torch.allclose(alone[0], among[0], atol=1e-5)
    batch_statistics = GeneratedSamples(generator, "cpu", eval_mode=False)
    with_batch = batch_statistics.render(keypoints, seatbelt, SIZE)
    pair = batch_statistics.render(keypoints[:2], seatbelt[:2], SIZE)
    assert not torch.allclose(pair[0], with_batch[0], atol=1e-3)  # what the seed's recipe renders depends on it


# --------------------------------------------------------------------------- keypoint subsets


def test_metrics_over_a_keypoint_subset_count_only_those_keypoints():
    from common.posedata.maps import nadsnet_targets

    keypoints = front_row_person(64)[None, None].astype(np.float32)
    keypoints = torch.from_numpy(keypoints)
    heatmaps, _ = nadsnet_targets(keypoints, 64)
    heatmaps[:, 0] = 0  # the right wrist is never found
    subset = torch.zeros(1, 1, NUM_KEYPOINTS, dtype=torch.bool)
    subset[..., [0, 1]] = True  # right wrist and elbow
    everything, only = ValidationMetrics(64, "cpu"), ValidationMetrics(64, "cpu")
    everything.update(heatmaps, keypoints)
    only.update(heatmaps, keypoints, evaluated=subset)
    assert only.summary()["present"] == 2 and only.summary()["pckt"] == pytest.approx(0.5)
    assert everything.summary()["present"] == 9 and everything.summary()["pckt"] == pytest.approx(8 / 9)
