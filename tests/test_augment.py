"""Augmentations (common.posedata.augment): arm poses and resize-and-place."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from common.posedata.augment import (
    SCALE_TENTHS,
    arm_augment,
    geometric_augment,
    map_placement,
    scaled_size,
    torso_height,
)
from common.posedata.pose import ARMS, HIPS, LEFT_HIP, NECK, NUM_KEYPOINTS, NUM_PAF_CHANNELS, RIGHT_HIP

ARM_JOINTS = sorted({joint for arm in ARMS for joint in arm[1:]})  # elbows and wrists
STILL_JOINTS = [joint for joint in range(NUM_KEYPOINTS) if joint not in ARM_JOINTS]


def seated_person(centre_x: float = 192.0, top_y: float = 180.0, torso: float = 100.0) -> np.ndarray:
    """A front-facing person (9, 2): neck at (centre_x, top_y), hips `torso` px below, arms down."""
    half = 0.3 * torso
    return np.array(
        [
            (centre_x - half - 5, top_y + 1.1 * torso),  # right wrist
            (centre_x - half - 3, top_y + 0.6 * torso),  # right elbow
            (centre_x - half, top_y + 0.05 * torso),  # right shoulder
            (centre_x, top_y),  # neck
            (centre_x + half, top_y + 0.05 * torso),  # left shoulder
            (centre_x + half + 3, top_y + 0.6 * torso),  # left elbow
            (centre_x + half + 5, top_y + 1.1 * torso),  # left wrist
            (centre_x, top_y + torso),  # right hip (straight below the neck: torso = `torso`)
            (centre_x, top_y + torso),  # left hip
        ]
    )


def arm_lengths(person: np.ndarray) -> tuple[float, float]:
    """(upper arm L, forearm F) the seed's augmentation gives this person."""
    upper = 0.77 * torso_height(person)
    return upper, 0.9 * upper


# ---------------------------------------------------------------- arm_augment


@pytest.mark.parametrize("mode", ["none", "slightly", "highly"])
def test_arm_augment_returns_a_new_array_and_leaves_the_input_alone(mode):
    people = np.stack([seated_person(), seated_person(100.0, 150.0, 30.0)]).astype(np.float32)
    people[0, ARMS[0][1]] = np.nan  # a missing elbow
    before = people.copy()
    result = arm_augment(people, mode, np.random.default_rng(0))
    np.testing.assert_array_equal(people, before)
    assert result is not people and not np.shares_memory(result, people)
    assert result.shape == people.shape and result.dtype == people.dtype
    if mode == "none":
        np.testing.assert_array_equal(result, people)
    else:
        assert not np.array_equal(result, people, equal_nan=True)


def test_invalid_mode_is_refused():
    with pytest.raises(ValueError, match="slightly"):
        arm_augment(seated_person()[None], "wildly", np.random.default_rng(0))


def test_slightly_moves_elbows_and_wrists_by_whole_pixels_within_bounds():
    person = seated_person()
    person[ARMS[1][2]] = np.nan  # left wrist missing: must stay missing
    upper, fore = arm_lengths(person)
    offsets = {joint: [] for joint in ARM_JOINTS}
    for seed in range(200):
        result = arm_augment(person[None], "slightly", np.random.default_rng(seed))[0]
        np.testing.assert_array_equal(result[STILL_JOINTS], person[STILL_JOINTS])
        assert np.isnan(result[ARMS[1][2]]).all()
        for joint in ARM_JOINTS:
            if joint != ARMS[1][2]:
                offsets[joint].append(result[joint] - person[joint])
    for _, elbow, wrist in ARMS:
        for joint, length in ((elbow, upper), (wrist, fore)):
            if not offsets[joint]:
                continue
            moved = np.array(offsets[joint])
            np.testing.assert_array_equal(moved, np.round(moved))  # whole pixels
            assert np.abs(moved).max() <= 0.1 * length + 0.5
            assert np.abs(moved).max() >= 0.1 * length - 1.5  # the range is used, not just 0
            assert len(np.unique(moved[:, 0])) > 5 and len(np.unique(moved[:, 1])) > 5


def test_slightly_is_not_clipped_to_the_frame():
    person = seated_person(centre_x=20.0, top_y=100.0)  # right arm at x ~ -15
    results = np.stack([arm_augment(person[None], "slightly", np.random.default_rng(seed))[0] for seed in range(20)])
    assert (results[:, ARM_JOINTS, 0] < 0).any()


def test_highly_draws_arm_lengths_in_range_and_keeps_the_rest():
    person = seated_person()  # arms can reach at most L + F ~ 146 px: no clipping in 384 px
    upper, fore = arm_lengths(person)
    upper_lengths, fore_lengths = [], []
    for seed in range(300):
        result = arm_augment(person[None], "highly", np.random.default_rng(seed))[0]
        np.testing.assert_array_equal(result[STILL_JOINTS], person[STILL_JOINTS])
        np.testing.assert_array_equal(result, np.round(result))
        for shoulder, elbow, wrist in ARMS:
            upper_lengths.append(np.hypot(*(result[elbow] - result[shoulder])))
            fore_lengths.append(np.hypot(*(result[wrist] - result[elbow])))
    rounding = np.sqrt(0.5)  # each rounded point is within sqrt(2) / 2 of the exact one
    for lengths, nominal in ((np.array(upper_lengths), upper), (np.array(fore_lengths), fore)):
        assert lengths.min() >= 0.1 * nominal - rounding and lengths.max() <= nominal + rounding
        assert abs(np.median(lengths) - 0.7 * nominal) < 0.1 * nominal  # N(0.7, 0.2) before clipping


def test_highly_results_stay_inside_the_frame():
    for image_size, corner in ((384, 3.0), (128, 125.0)):
        person = seated_person(centre_x=corner, top_y=corner, torso=100.0 * image_size / 384)
        for seed in range(100):
            result = arm_augment(person[None], "highly", np.random.default_rng(seed), image_size)[0]
            arms = result[ARM_JOINTS]
            assert (arms >= 0).all() and (arms <= image_size).all()


def test_highly_makes_missing_elbows_and_wrists_present_only_where_the_shoulder_is():
    person = seated_person()
    right_shoulder, right_elbow, right_wrist = ARMS[0]
    left_shoulder, left_elbow, left_wrist = ARMS[1]
    person[[right_elbow, right_wrist]] = np.nan
    person[[left_shoulder, left_elbow]] = np.nan
    result = arm_augment(person[None], "highly", np.random.default_rng(1))[0]
    assert np.isfinite(result[[right_elbow, right_wrist]]).all()
    # No left shoulder: the left side is untouched (the elbow stays missing, the wrist stays put).
    assert np.isnan(result[[left_shoulder, left_elbow]]).all()
    np.testing.assert_array_equal(result[left_wrist], person[left_wrist])


@pytest.mark.parametrize("mode", ["slightly", "highly"])
def test_back_row_and_incomplete_people_are_untouched(mode):
    small = seated_person(torso=60.0)  # 60 px <= 70 px at 384
    no_neck = seated_person()
    no_neck[NECK] = np.nan
    no_hips = seated_person()
    no_hips[list(HIPS)] = np.nan
    people = np.stack([small, no_neck, no_hips, seated_person()])
    result = arm_augment(people, mode, np.random.default_rng(4))
    np.testing.assert_array_equal(result[:3], people[:3])
    assert not np.array_equal(result[3], people[3])


def test_front_row_threshold_scales_with_the_image_size():
    person = seated_person(centre_x=64.0, top_y=30.0, torso=40.0)  # > 70 * 128 / 384 = 23.3, < 70
    changed_128 = arm_augment(person[None], "slightly", np.random.default_rng(0), image_size=128)
    changed_384 = arm_augment(person[None], "slightly", np.random.default_rng(0), image_size=384)
    assert not np.array_equal(changed_128, person[None])
    np.testing.assert_array_equal(changed_384, person[None])


def test_torso_height_is_the_mean_over_present_hips():
    person = seated_person(torso=100.0)
    person[LEFT_HIP] = person[NECK] + (0.0, 30.0)
    assert torso_height(person) == pytest.approx(65.0)
    # Mean 65 <= 70: untouched, although the right hip alone is 100 px away (the seed's typo
    # used the right hip twice and would have augmented this person).
    np.testing.assert_array_equal(arm_augment(person[None], "highly", np.random.default_rng(0))[0], person)
    one_hip = seated_person(torso=100.0)
    one_hip[RIGHT_HIP] = np.nan  # only the left hip, 100 px below the neck
    assert torso_height(one_hip) == pytest.approx(100.0)
    result = arm_augment(one_hip[None], "highly", np.random.default_rng(0))[0]
    assert not np.array_equal(result, one_hip)
    for shoulder, elbow, _ in ARMS:
        assert np.hypot(*(result[elbow] - result[shoulder])) <= 77.0 + 0.71


@pytest.mark.parametrize("mode", ["slightly", "highly"])
def test_arm_augment_is_reproducible_with_the_same_seed(mode):
    people = np.stack([seated_person(), seated_person(250.0, 170.0, 90.0)])
    first = arm_augment(people, mode, np.random.default_rng(11))
    again = arm_augment(people, mode, np.random.default_rng(11))
    other = arm_augment(people, mode, np.random.default_rng(12))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_no_people_is_fine():
    result = arm_augment(np.zeros((0, NUM_KEYPOINTS, 2), np.float32), "highly", np.random.default_rng(0))
    assert result.shape == (0, NUM_KEYPOINTS, 2)


# ---------------------------------------------------------------- geometric_augment

FILL = torch.tensor([7.0, -8.0, 9.0])  # far outside the random images' values: easy to spot


def make_batch(batch: int, size: int, seed: int = 0, background: bool = True):
    """Random (images, seatbelt, heatmaps, pafs): maps at size / 4; heatmaps all in (0, 1]."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, 3, size, size, generator=generator) * 2 - 1
    seatbelt = (torch.rand(batch, 1, size, size, generator=generator) > 0.5).float()
    cells = size // 4
    heatmaps = torch.rand(batch, NUM_KEYPOINTS + int(background), cells, cells, generator=generator) * 0.5 + 0.5
    pafs = torch.rand(batch, NUM_PAF_CHANNELS, cells, cells, generator=generator) * 0.5 + 0.5
    return images, seatbelt, heatmaps, pafs


def pasted_box(mask: torch.Tensor) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the True region of a 2-D mask, which must be a full rectangle."""
    rows, cols = torch.nonzero(mask.any(1)).flatten(), torch.nonzero(mask.any(0)).flatten()
    top, left = int(rows[0]), int(cols[0])
    height, width = int(rows[-1]) - top + 1, int(cols[-1]) - left + 1
    assert mask[top : top + height, left : left + width].all() and int(mask.sum()) == height * width
    return top, left, height, width


def test_geometric_augment_keeps_shapes_dtypes_and_device():
    batch = make_batch(3, 64)
    result = geometric_augment(*batch, torch.Generator().manual_seed(0), FILL)
    for got, given in zip(result, batch):
        assert got.shape == given.shape and got.dtype == given.dtype and got.device == given.device
        assert got is not given


def test_geometric_augment_is_reproducible_with_the_same_generator_seed():
    batch = make_batch(4, 64)
    first = geometric_augment(*batch, torch.Generator().manual_seed(5), FILL)
    again = geometric_augment(*batch, torch.Generator().manual_seed(5), FILL)
    other = geometric_augment(*batch, torch.Generator().manual_seed(6), FILL)
    for a, b in zip(first, again):
        assert torch.equal(a, b)
    assert not torch.equal(first[0], other[0])


def test_geometric_augment_runs_on_the_batch_device_and_matches_cpu():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    batch = make_batch(3, 64)
    on_cpu = geometric_augment(*batch, torch.Generator().manual_seed(2), FILL)
    on_gpu = geometric_augment(*(t.cuda() for t in batch), torch.Generator().manual_seed(2), FILL.cuda())
    for cpu_result, gpu_result in zip(on_cpu, on_gpu):
        assert gpu_result.device.type == "cuda"
        # The seatbelt threshold may flip a pixel whose resized value sits at 0.5 +- rounding.
        tolerance = 1e-4 if cpu_result is not on_cpu[1] else 1.0
        torch.testing.assert_close(gpu_result.cpu(), cpu_result, atol=tolerance, rtol=0)
    assert (on_gpu[1].cpu() != on_cpu[1]).float().mean() < 0.01


def test_scale_one_places_the_sample_unchanged_and_the_canvas_is_filled_elsewhere():
    images, seatbelt, heatmaps, pafs = make_batch(160, 32, seed=1)
    out_images, out_seatbelt, out_heatmaps, out_pafs = geometric_augment(
        images, seatbelt, heatmaps, pafs, torch.Generator().manual_seed(0), FILL
    )
    full = 0
    for sample in range(len(images)):
        content = (out_images[sample] != FILL.view(3, 1, 1)).all(0)
        top, left, height, width = pasted_box(content)
        canvas = ~content
        assert (out_images[sample][:, canvas] == FILL[:, None]).all()
        assert not out_seatbelt[sample, 0][canvas].any()
        if height == width == 32:  # a scale of 1.0 on both axes: nothing may change
            full += 1
            for got, given in zip(
                (out_images, out_seatbelt, out_heatmaps, out_pafs), (images, seatbelt, heatmaps, pafs)
            ):
                assert torch.equal(got[sample], given[sample])
        # Maps: zero around the pasted maps, except the background channel, which is 1 there.
        map_content = (out_pafs[sample] != 0).all(0)
        map_top, map_left, map_height, map_width = pasted_box(map_content)
        assert (map_height, map_width) == (round(height / 4), round(width / 4))
        assert not out_heatmaps[sample, :NUM_KEYPOINTS][:, ~map_content].any()
        assert (out_heatmaps[sample, NUM_KEYPOINTS][~map_content] == 1).all()
    assert full >= 1  # this seed draws scale 1.0 x 1.0 at least once


@pytest.mark.parametrize("size", [64, 96, 128])
def test_every_scale_and_offset_fits_its_canvas(size):
    map_size = size // 4
    for tenths in SCALE_TENTHS:
        side = scaled_size(tenths, size)
        assert side == round(tenths / 10 * size)
        for offset in range(size - side + 1):
            map_offset, map_side = map_placement(offset, tenths, size, map_size)
            assert map_side == round(tenths / 10 * map_size)
            assert 0 <= map_offset and map_offset + map_side <= map_size
            assert abs(map_offset * 4 - offset) <= 4  # the maps stay aligned with the image
    # And end to end, many random draws paste without error and keep a rectangle of the right size.
    images, seatbelt, heatmaps, pafs = make_batch(24, size, seed=size)
    generator = torch.Generator().manual_seed(size)
    out_images, _, _, out_pafs = geometric_augment(images, seatbelt, heatmaps, pafs, generator, FILL)
    sides = {scaled_size(tenths, size) for tenths in SCALE_TENTHS}
    for sample in range(len(images)):
        _, _, height, width = pasted_box((out_images[sample] != FILL.view(3, 1, 1)).all(0))
        assert height in sides and width in sides
        _, _, map_height, map_width = pasted_box((out_pafs[sample] != 0).all(0))
        assert (map_height, map_width) == (round(height / size * map_size), round(width / size * map_size))


def test_the_seatbelt_stays_binary_and_keeps_its_area_after_shrinking():
    images, _, heatmaps, pafs = make_batch(64, 64, seed=3)
    seatbelt = torch.zeros(64, 1, 64, 64)
    seatbelt[:, :, :, 20:23] = 1.0  # thin belts (3 px): the seed's uint8 canvas lost such belts
    seatbelt[:, :, 40:43, :] = 1.0
    out_images, out_seatbelt, _, _ = geometric_augment(
        images, seatbelt, heatmaps, pafs, torch.Generator().manual_seed(1), FILL
    )
    assert set(out_seatbelt.unique().tolist()) <= {0.0, 1.0}
    kept = []
    for sample in range(len(images)):
        _, _, height, width = pasted_box((out_images[sample] != FILL.view(3, 1, 1)).all(0))
        expected_area = seatbelt[sample].sum() * height * width / 64**2
        kept.append(float(out_seatbelt[sample].sum() / expected_area))
    # Thresholding at 0.5 keeps the belt's area on average; only pixels at 1.0 would keep ~1/3.
    assert 0.8 < np.mean(kept) < 1.2 and min(kept) > 0.5
    # A full mask stays full inside the pasted box, whatever bicubic rounding does.
    out_images, out_seatbelt, _, _ = geometric_augment(
        images, torch.ones_like(seatbelt), heatmaps, pafs, torch.Generator().manual_seed(1), FILL
    )
    for sample in range(len(images)):
        content = (out_images[sample] != FILL.view(3, 1, 1)).all(0)
        assert out_seatbelt[sample, 0][content].all() and not out_seatbelt[sample, 0][~content].any()


def test_heatmaps_without_background_get_a_zero_canvas():
    images, seatbelt, heatmaps, pafs = make_batch(6, 64, seed=4, background=False)
    generator = torch.Generator().manual_seed(3)
    _, _, out_heatmaps, out_pafs = geometric_augment(images, seatbelt, heatmaps, pafs, generator, FILL)
    canvas = (out_pafs == 0).all(1)  # (B, 16, 16)
    assert canvas.any()
    assert not out_heatmaps.permute(1, 0, 2, 3)[:, canvas].any()


def test_bad_shapes_are_refused():
    images, seatbelt, heatmaps, pafs = make_batch(2, 64)
    with pytest.raises(ValueError):
        geometric_augment(images, seatbelt[:1], heatmaps, pafs, torch.Generator(), FILL)
    with pytest.raises(ValueError):
        geometric_augment(images, seatbelt, heatmaps, pafs[..., :8], torch.Generator(), FILL)
