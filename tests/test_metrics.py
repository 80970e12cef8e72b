"""NADS-Net validation metrics (nadsnet_pvt.metrics) on constructed heatmaps and masks with
answers worked out by hand. No network is involved."""

from __future__ import annotations

import math

import pytest
import torch

from common.posedata.pose import (
    KEYPOINT_NAMES,
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
from nadsnet_pvt.metrics import (
    COUNT_SIZE,
    PCKT_TORSO_FRACTION,
    ValidationMetrics,
    find_peaks,
    format_keypoint_table,
    format_overall,
    nearest_peak_distances,
    pck_thresholds,
    torso_lengths,
)

NAN = math.nan


def cell_centre(index: int, stride: float = 4.0) -> float:
    return stride / 2 - 0.5 + index * stride


def heatmaps_with_peaks(peaks: dict[int, list[tuple[int, int]]], cells: int = 96, channels: int = NUM_KEYPOINTS) -> torch.Tensor:
    """(1, channels, cells, cells): a bump (1.0 centre, 0.5 around it) at each (gx, gy) of each channel."""
    maps = torch.zeros(1, channels, cells, cells)
    for channel, cells_xy in peaks.items():
        for gx, gy in cells_xy:
            maps[0, channel, gy - 1 : gy + 2, gx - 1 : gx + 2] = 0.5
        for gx, gy in cells_xy:
            maps[0, channel, gy, gx] = 1.0
    return maps


def test_thresholds_scale_with_input_size():
    assert pck_thresholds(384) == (5.0, 10.0)
    assert pck_thresholds(192) == (2.5, 5.0)
    assert pck_thresholds(64) == pytest.approx((5 / 6, 10 / 6))


def test_find_peaks_local_maxima_above_threshold():
    maps = torch.zeros(1, 2, 8, 8)
    maps[0, 0, 2, 3] = 0.9
    maps[0, 0, 2, 4] = 0.5  # a neighbour of a higher cell: not a peak
    maps[0, 0, 6, 6] = 0.3  # isolated: a peak
    maps[0, 1, 5, 1] = 0.1  # not above the 0.1 threshold
    maps[0, 1, 0, 0] = 0.2  # in the corner (cells outside the map do not count)
    peaks = find_peaks(maps)
    assert torch.nonzero(peaks).tolist() == [[0, 0, 2, 3], [0, 0, 6, 6], [0, 1, 0, 0]]


def test_nearest_peak_distance_in_input_pixels():
    maps = heatmaps_with_peaks({NECK: [(10, 20), (40, 40)]})
    x, y = cell_centre(10), cell_centre(20)  # (41.5, 81.5) in input pixels at 384
    keypoints = torch.full((1, 2, NUM_KEYPOINTS, 2), NAN)
    keypoints[0, 0, NECK] = torch.tensor([x + 3.0, y + 4.0])  # 5 px from the first peak
    keypoints[0, 1, NECK] = torch.tensor([cell_centre(40), cell_centre(40)])  # on the second
    keypoints[0, 0, RIGHT_WRIST] = torch.tensor([100.0, 100.0])  # no wrist peak at all
    distances = nearest_peak_distances(maps, keypoints, 384)
    assert distances.shape == (1, 2, NUM_KEYPOINTS)
    assert distances[0, 0, NECK].item() == pytest.approx(5.0)
    assert distances[0, 1, NECK].item() == pytest.approx(0.0)
    assert math.isinf(distances[0, 0, RIGHT_WRIST].item())
    assert math.isnan(distances[0, 0, LEFT_HIP].item())  # missing keypoint


def test_pck_mean_error_and_per_keypoint_table():
    # Neck: GT 5 px from a neck peak (matched at 5 and 10). Right wrist: GT 8 px from a wrist
    # peak (matched at 10 only). Left hip: a peak of another type nearby only (unmatched).
    maps = heatmaps_with_peaks({NECK: [(10, 20)], RIGHT_WRIST: [(30, 30)], RIGHT_WRIST + 1: [(60, 60)]})
    keypoints = torch.full((1, 1, NUM_KEYPOINTS, 2), NAN)
    keypoints[0, 0, NECK] = torch.tensor([cell_centre(10) + 3.0, cell_centre(20) - 4.0])
    keypoints[0, 0, RIGHT_WRIST] = torch.tensor([cell_centre(30), cell_centre(30) + 8.0])
    keypoints[0, 0, LEFT_HIP] = torch.tensor([cell_centre(60), cell_centre(60)])
    metrics = ValidationMetrics(image_size=384)
    metrics.update(maps, keypoints)
    summary = metrics.summary()
    assert summary["pck_present"] == 3
    assert summary["pck5"] == pytest.approx(1 / 3)
    assert summary["pck10"] == pytest.approx(2 / 3)
    assert summary["mean_error_px"] == pytest.approx((5.0 + 8.0) / 2)
    table = summary["per_keypoint"]
    # The torso (neck to the one hip, ~256 px) makes PCKt's threshold ~51 px: the neck and
    # the wrist are found, the hip (no hip peak at all) is not.
    assert table["neck"] == {"pck_present": 1, "pck5": 1.0, "pck10": 1.0, "present": 1, "pckt": 1.0}
    assert table["right_wrist"] == {"pck_present": 1, "pck5": 0.0, "pck10": 1.0, "present": 1, "pckt": 1.0}
    assert table["left_hip"] == {"pck_present": 1, "pck5": 0.0, "pck10": 0.0, "present": 1, "pckt": 0.0}
    assert math.isnan(table["left_elbow"]["pck5"]) and math.isnan(table["left_elbow"]["pckt"])  # never present
    text = format_keypoint_table(summary)
    assert all(name in text for name in KEYPOINT_NAMES)


def test_metrics_accumulate_over_batches_and_ignore_background_channel():
    metrics = ValidationMetrics(image_size=192)  # thresholds 2.5 and 5 px, stride 4 on 48 cells
    for offset in (2.0, 4.0):
        maps = heatmaps_with_peaks({NECK: [(5, 5)]}, cells=48, channels=NUM_KEYPOINTS + 1)
        maps[0, NUM_KEYPOINTS] = 1.0  # a background channel full of "peaks" must not count
        keypoints = torch.full((1, 1, NUM_KEYPOINTS, 2), NAN)
        keypoints[0, 0, NECK] = torch.tensor([cell_centre(5) + offset, cell_centre(5)])
        metrics.update(maps, keypoints)
    summary = metrics.summary()
    assert summary["pck_present"] == 2
    assert summary["present"] == 0 and summary["skipped_people"] == 2  # no hips: no PCKt
    assert summary["pck5"] == pytest.approx(0.5)  # 2 px within 2.5, 4 px not
    assert summary["pck10"] == pytest.approx(1.0)
    assert summary["mean_error_px"] == pytest.approx(3.0)


def test_seatbelt_iou_and_dice_at_half():
    prediction = torch.zeros(2, 1, 8, 8)
    target = torch.zeros(2, 1, 8, 8)
    prediction[0, 0, 0:4, 0:4] = 0.6  # 16 predicted pixels
    prediction[0, 0, 4:8, 4:8] = 0.5  # not above 0.5: not predicted
    target[0, 0, 0:4, 2:6] = 1.0  # 16 target pixels, 8 of them predicted
    target[1, 0, 7, 7] = 1.0  # one more target pixel in the second sample, missed
    metrics = ValidationMetrics(image_size=32)
    metrics.update(torch.zeros(2, NUM_KEYPOINTS, 8, 8), torch.full((2, 1, NUM_KEYPOINTS, 2), NAN), prediction, target)
    summary = metrics.summary()
    intersection, predicted, truth = 8, 16, 17
    assert summary["seatbelt_iou"] == pytest.approx(intersection / (predicted + truth - intersection))
    assert summary["seatbelt_dice"] == pytest.approx(2 * intersection / (predicted + truth))
    assert math.isnan(summary["pck5"])  # no keypoint present


def test_empty_seatbelt_everywhere_counts_as_perfect():
    metrics = ValidationMetrics(image_size=32)
    empty = torch.zeros(1, 1, 32, 32)
    metrics.update(torch.zeros(1, NUM_KEYPOINTS, 8, 8), torch.full((1, 1, NUM_KEYPOINTS, 2), NAN), empty, empty)
    summary = metrics.summary()
    assert summary["seatbelt_iou"] == 1.0 and summary["seatbelt_dice"] == 1.0


# --------------------------------------------------------------------------- PCKt@0.2
# All at 384 px input: 96 x 96 cells of stride 4, PCK thresholds 5 and 10 px.


def person(points: dict[int, tuple[float, float]]) -> torch.Tensor:
    """(9, 2) keypoints, NaN except the given {keypoint: (x, y)}."""
    keypoints = torch.full((NUM_KEYPOINTS, 2), NAN)
    for index, xy in points.items():
        keypoints[index] = torch.tensor(xy)
    return keypoints


def batch_of(images: list[list[torch.Tensor]]) -> torch.Tensor:
    """(B, Pmax, 9, 2): people per image, padded with NaN people as collate_poses does."""
    most = max(len(people) for people in images)
    keypoints = torch.full((len(images), most, NUM_KEYPOINTS, 2), NAN)
    for row, people in enumerate(images):
        for column, one in enumerate(people):
            keypoints[row, column] = one
    return keypoints


def at(gx: int, gy: int, dx: float = 0.0, dy: float = 0.0) -> tuple[float, float]:
    """Input pixel of cell (gx, gy)'s centre, moved by (dx, dy)."""
    return cell_centre(gx) + dx, cell_centre(gy) + dy


def summarise(maps: torch.Tensor, keypoints: torch.Tensor, image_size: int = 384) -> dict:
    metrics = ValidationMetrics(image_size)
    metrics.update(maps, keypoints)
    return metrics.summary()


def test_pckt_threshold_is_fraction_of_neck_to_hip_midpoint_and_edge():
    assert PCKT_TORSO_FRACTION == 0.2
    # Neck at cell (25, 25); hips 20 px left/right and 50 px below: torso 50 px, threshold 10 px.
    torso = {NECK: at(25, 25), RIGHT_HIP: at(20, 25, 0, 50), LEFT_HIP: at(30, 25, 0, 50)}
    keypoints = person({**torso, RIGHT_WRIST: at(40, 40, 0, 9.99), LEFT_WRIST: at(60, 40, 0, 10.01)})
    assert torso_lengths(keypoints[None, None]).item() == pytest.approx(50.0)
    maps = heatmaps_with_peaks({RIGHT_WRIST: [(40, 40)], LEFT_WRIST: [(60, 40)]})
    summary = summarise(maps, keypoints[None, None])
    table = summary["per_keypoint"]
    assert table["right_wrist"]["pckt"] == 1.0  # 9.99 px: just inside
    assert table["left_wrist"]["pckt"] == 0.0  # 10.01 px: just outside
    assert summary["present"] == 5 and summary["skipped_people"] == 0
    assert summary["pckt"] == pytest.approx(1 / 5)  # no neck or hip peaks: only the right wrist
    assert summary["pck10"] == pytest.approx(1 / 5)  # PCK@10 is unchanged beside it


def test_pckt_torso_to_the_one_hip_present():
    # Neck at cell (25, 25), right hip 50 px below it, no left hip: torso 50, threshold 10.
    # (Half the torso, or the hip taken as 0, would give other answers.)
    keypoints = person({
        NECK: at(25, 25), RIGHT_HIP: at(25, 25, 0, 50),
        RIGHT_WRIST: at(40, 40, 0, 8.0), RIGHT_ELBOW: at(50, 40, 0, 12.0),
    })
    assert torso_lengths(keypoints[None, None]).item() == pytest.approx(50.0)
    maps = heatmaps_with_peaks({NECK: [(25, 25)], RIGHT_WRIST: [(40, 40)], RIGHT_ELBOW: [(50, 40)]})
    summary = summarise(maps, keypoints[None, None])
    assert summary["present"] == 4 and summary["skipped_people"] == 0 and summary["people"] == 1
    assert summary["pckt"] == pytest.approx(2 / 4)  # neck (0 px) and wrist (8 px); elbow 12 px, hip no peak
    assert summary["per_keypoint"]["right_wrist"]["pckt"] == 1.0
    assert summary["per_keypoint"]["right_elbow"]["pckt"] == 0.0


@pytest.mark.parametrize(
    "missing, reason",
    [((NECK,), "no neck"), ((RIGHT_HIP, LEFT_HIP), "no hips")],
)
def test_person_without_torso_is_skipped_by_pckt_and_counted(missing, reason):
    points = {NECK: at(25, 25), RIGHT_HIP: at(20, 37), LEFT_HIP: at(30, 37), RIGHT_WRIST: at(40, 40)}
    keypoints = person({k: v for k, v in points.items() if k not in missing})
    maps = heatmaps_with_peaks({channel: [(40, 40)] for channel in range(NUM_KEYPOINTS)})
    summary = summarise(maps, keypoints[None, None])
    assert summary["skipped_people"] == 1, reason
    assert summary["present"] == 0 and math.isnan(summary["pckt"]) and math.isnan(summary["pckt_arms"])
    assert summary["pck_present"] == 4 - len(missing)  # PCK still evaluates its keypoints
    assert summary["per_keypoint"]["right_wrist"]["pck5"] == 1.0


def test_torso_lengths_defined_cases():
    people = torch.stack([
        person({NECK: (10.0, 10.0), RIGHT_HIP: (10.0, 40.0), LEFT_HIP: (30.0, 40.0)}),  # to the midpoint (20, 40)
        person({NECK: (10.0, 10.0), LEFT_HIP: (10.0, 25.0)}),  # one hip
        person({NECK: (10.0, 10.0), RIGHT_HIP: (10.0, 10.0)}),  # length 0: undefined
        person({RIGHT_HIP: (10.0, 40.0), LEFT_HIP: (30.0, 40.0)}),  # no neck
        person({NECK: (10.0, 10.0)}),  # no hips
        person({}),  # padding
    ])[None]
    lengths = torso_lengths(people)[0]
    assert lengths[0].item() == pytest.approx(math.hypot(10.0, 30.0))
    assert lengths[1].item() == pytest.approx(15.0)
    assert torch.isnan(lengths[2:]).all()


def test_keypoints_beyond_the_frame_are_skipped_but_a_hip_beyond_still_defines_the_torso():
    # Neck (201.5, 301.5); right hip 40 px below (in the frame); left hip 140 px below, beyond
    # the bottom edge. Midpoint 90 px below the neck: threshold 18 px (8 px without the far hip).
    keypoints = person({
        NECK: at(50, 75), RIGHT_HIP: at(50, 75, 0, 40), LEFT_HIP: at(50, 75, 0, 140),
        RIGHT_WRIST: at(20, 20, 0, 12),  # 12 px from its peak
        RIGHT_ELBOW: (384.0, 100.0),  # x = S: beyond the right edge
        LEFT_ELBOW: (100.0, 500.0),  # beyond the bottom edge
        LEFT_SHOULDER: (-2.0, 100.0),  # negative
    })
    assert keypoints[LEFT_HIP, 1] >= 384
    maps = heatmaps_with_peaks({
        NECK: [(50, 75)], RIGHT_HIP: [(50, 85)], RIGHT_WRIST: [(20, 20)],
        RIGHT_ELBOW: [(95, 25)], LEFT_ELBOW: [(25, 95)], LEFT_SHOULDER: [(0, 25)],  # peaks at the edges
    })
    distances = nearest_peak_distances(maps, keypoints[None, None], 384)[0, 0]
    assert torch.isnan(distances[[RIGHT_ELBOW, LEFT_ELBOW, LEFT_SHOULDER, LEFT_HIP]]).all()
    summary = summarise(maps, keypoints[None, None])
    assert summary["pck_present"] == 3 and summary["present"] == 3  # neck, right hip, right wrist
    assert summary["pck10"] == pytest.approx(2 / 3)  # the wrist is 12 px off
    assert summary["pckt"] == 1.0  # 12 px < 0.2 x 90 px
    assert summary["mean_error_px"] == pytest.approx(0.0)
    for name in ("right_elbow", "left_elbow", "left_shoulder", "left_hip"):
        row = summary["per_keypoint"][name]
        assert row["pck_present"] == 0 and row["present"] == 0 and math.isnan(row["pckt"])


def test_pckt_arms_counts_elbows_and_wrists_only():
    torso = {NECK: at(45, 30), RIGHT_HIP: at(40, 50), LEFT_HIP: at(50, 50)}
    arms = {
        RIGHT_SHOULDER: at(35, 32), LEFT_SHOULDER: at(55, 32), RIGHT_ELBOW: at(30, 40),
        LEFT_ELBOW: at(60, 40), RIGHT_WRIST: at(30, 48), LEFT_WRIST: at(60, 48),
    }
    keypoints = person({**torso, **arms})
    # Peaks on every keypoint but the right elbow and the left wrist.
    found = {k: [(int((x - 1.5) / 4), int((y - 1.5) / 4))] for k, (x, y) in {**torso, **arms}.items()
             if k not in (RIGHT_ELBOW, LEFT_WRIST)}
    summary = summarise(heatmaps_with_peaks(found), keypoints[None, None])
    assert summary["present"] == 9 and summary["present_arms"] == 4
    assert summary["pckt"] == pytest.approx(7 / 9)
    assert summary["pckt_arms"] == pytest.approx(2 / 4)
    assert "PCKt@0.2" in format_keypoint_table(summary) and "PCKt@0.2 0.778" in format_overall(summary)


def test_several_people_per_batch_with_padding_have_their_own_torso():
    big = person({NECK: at(20, 10), RIGHT_HIP: at(20, 10, 0, 100), RIGHT_WRIST: at(10, 10, 0, 10)})  # threshold 20
    small = person({NECK: at(70, 10), LEFT_HIP: at(70, 10, 0, 20), RIGHT_WRIST: at(80, 10, 0, 10)})  # threshold 4
    headless = person({RIGHT_HIP: at(50, 70), RIGHT_WRIST: at(50, 80)})  # skipped by PCKt
    keypoints = batch_of([[big, small], [headless]])  # image 1 has a NaN padding person
    assert keypoints.shape == (2, 2, NUM_KEYPOINTS, 2) and torch.isnan(keypoints[1, 1]).all()
    maps = torch.cat([
        heatmaps_with_peaks({RIGHT_WRIST: [(10, 10), (80, 10)]}),
        heatmaps_with_peaks({RIGHT_WRIST: [(50, 80)]}),
    ])
    summary = summarise(maps, keypoints)
    assert summary["images"] == 2 and summary["people"] == 3 and summary["skipped_people"] == 1
    wrist = summary["per_keypoint"]["right_wrist"]
    assert wrist["present"] == 2 and wrist["pckt"] == pytest.approx(0.5)  # 10 px: the big person's only
    assert wrist["pck_present"] == 3 and wrist["pck10"] == 1.0  # the headless one's wrist counts for PCK
    assert summary["pck_present"] == 8 and summary["present"] == 6


def test_counts_can_be_reduced_between_accumulation_and_summary():
    first = batch_of([[person({NECK: at(10, 10), RIGHT_HIP: at(10, 20), RIGHT_WRIST: at(30, 30, 3, 0)})]])
    second = batch_of([[person({NECK: at(50, 10), LEFT_HIP: at(50, 30), LEFT_WRIST: at(60, 60, 0, 7)})]])
    maps = heatmaps_with_peaks({NECK: [(10, 10), (50, 10)], RIGHT_WRIST: [(30, 30)], LEFT_WRIST: [(60, 60)]})
    belt = torch.zeros(1, 1, 384, 384)
    belt[..., :10, :10] = 1.0
    together, one, other = ValidationMetrics(384), ValidationMetrics(384), ValidationMetrics(384)
    for metrics, keypoints in ((together, first), (together, second), (one, first), (other, second)):
        metrics.update(maps, keypoints, belt, belt)
    assert one.counts().shape == (COUNT_SIZE,) and one.counts().dtype == torch.float64
    one.reduce(lambda counts: counts + other.counts())  # what an all-reduce over two processes gives
    assert one.summary() == together.summary()
    other.reduce(lambda counts: counts.mul_(0))  # in place, returning None like all_reduce
    other.load_counts(together.counts().clone())
    assert other.summary() == together.summary()
    with pytest.raises(ValueError, match="shape"):
        other.load_counts(torch.zeros(3))


def test_summary_needs_a_batch_and_seatbelt_is_nan_without_a_head():
    with pytest.raises(ValueError, match="no validation batch"):
        ValidationMetrics(384).summary()
    with pytest.raises(ValueError, match="no validation batch"):
        ValidationMetrics(384, device="cpu").summary()  # allocated, still empty
    summary = summarise(torch.zeros(1, NUM_KEYPOINTS, 96, 96), torch.full((1, 0, NUM_KEYPOINTS, 2), NAN))
    assert math.isnan(summary["seatbelt_iou"]) and math.isnan(summary["seatbelt_dice"])
    assert summary["people"] == 0 and math.isnan(summary["pckt"])
