"""NADS-Net validation metrics (nadsnet_pvt.metrics) on constructed heatmaps and masks with
answers worked out by hand. No network is involved."""

from __future__ import annotations

import math

import pytest
import torch

from common.pose import KEYPOINT_NAMES, NECK, NUM_KEYPOINTS, RIGHT_WRIST, LEFT_HIP
from nadsnet_pvt.metrics import (
    ValidationMetrics,
    find_peaks,
    format_keypoint_table,
    nearest_peak_distances,
    pck_thresholds,
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
    assert summary["present"] == 3
    assert summary["pck5"] == pytest.approx(1 / 3)
    assert summary["pck10"] == pytest.approx(2 / 3)
    assert summary["mean_error_px"] == pytest.approx((5.0 + 8.0) / 2)
    table = summary["per_keypoint"]
    assert table["neck"] == {"present": 1, "pck5": 1.0, "pck10": 1.0}
    assert table["right_wrist"] == {"present": 1, "pck5": 0.0, "pck10": 1.0}
    assert table["left_hip"] == {"present": 1, "pck5": 0.0, "pck10": 0.0}
    assert math.isnan(table["left_elbow"]["pck5"])  # never present
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
    assert summary["present"] == 2
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
