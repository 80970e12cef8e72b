"""Validation metrics of NADS-Net: keypoint PCK from heatmap peaks, and seatbelt IoU / Dice.

Definitions (all on NADS-Net's outputs, no post-processing beyond peak finding):

- Peaks: in each heatmap channel, the cells that equal the maximum of their 3 x 3
  neighbourhood and exceed 0.1. A cell (gx, gy) of the stride-4 output sits at input pixel
  (start + gx * stride, start + gy * stride), start = stride / 2 - 0.5 (the convention the
  label heatmaps are rendered with, SPEC 3).
- PCK@t: the fraction of present ground-truth keypoints that have a peak of the same type
  (channel) within t input pixels. t = 5 and 10 px at 384 input, scaled by S / 384 for
  other input sizes S (at 64 px: 0.83 and 1.67 px, i.e. less than one output cell).
- Mean error: the mean distance (input pixels) from each ground-truth keypoint matched at
  the larger threshold to its nearest peak of the same type.
- Per-keypoint table: present count, PCK@5 and PCK@10 for each of the 9 keypoints.
- Seatbelt IoU and Dice: the predicted mask thresholded at 0.5 against the target, pixels
  summed over the whole validation set (IoU = I / U, Dice = 2 I / (|P| + |T|); both are 1
  when prediction and target are empty everywhere).

The 10th (background) heatmap channel, when present, is ignored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from common.pose import KEYPOINT_NAMES, NUM_KEYPOINTS, scale_for

PEAK_THRESHOLD = 0.1
PCK_THRESHOLDS_AT_384 = (5.0, 10.0)
SEATBELT_THRESHOLD = 0.5


def pck_thresholds(image_size: int) -> tuple[float, float]:
    """The PCK distance thresholds in input pixels for an `image_size` input (5 and 10 at 384)."""
    factor = scale_for(image_size)
    return tuple(t * factor for t in PCK_THRESHOLDS_AT_384)


def find_peaks(heatmaps: torch.Tensor, threshold: float = PEAK_THRESHOLD) -> torch.Tensor:
    """Local maxima: (B, C, h, w) heatmaps -> bool (B, C, h, w), True where a cell equals the
    max of its 3 x 3 neighbourhood (cells outside the map do not count) and exceeds `threshold`."""
    heat = heatmaps.float()
    neighbourhood_max = F.max_pool2d(heat, kernel_size=3, stride=1, padding=1)
    return (heat == neighbourhood_max) & (heat > threshold)


def cell_centres(cells: int, stride: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """Input-pixel coordinate of each of `cells` cell centres along one axis: (cells,) float32."""
    start = stride / 2.0 - 0.5
    return torch.arange(cells, device=device, dtype=torch.float32) * stride + start


def nearest_peak_distances(heatmaps: torch.Tensor, keypoints: torch.Tensor, image_size: int) -> torch.Tensor:
    """For each ground-truth keypoint, the distance to the nearest peak of its type.

    heatmaps: (B, C >= 9, h, w) predicted heatmaps (stride = image_size / w).
    keypoints: (B, P, 9, 2) ground truth (x, y) in input pixels, NaN = missing / padding.
    Returns float32 (B, P, 9) in input pixels: NaN where the keypoint is missing, +inf where
    the channel has no peak.
    """
    batch, _, height, width = heatmaps.shape
    stride_y, stride_x = image_size / height, image_size / width
    peaks = find_peaks(heatmaps[:, :NUM_KEYPOINTS])  # (B, 9, h, w)
    keypoints = keypoints.to(device=heatmaps.device, dtype=torch.float32)
    if keypoints.shape[1] == 0:
        return keypoints.new_zeros((batch, 0, NUM_KEYPOINTS))
    xs = cell_centres(width, stride_x, heatmaps.device)
    ys = cell_centres(height, stride_y, heatmaps.device)
    # Squared distances separate into an x part and a y part: (B, P, 9, w) + (B, P, 9, h).
    squared_dx = (xs - keypoints[..., 0:1]) ** 2
    squared_dy = (ys - keypoints[..., 1:2]) ** 2
    squared = squared_dy[..., :, None] + squared_dx[..., None, :]  # (B, P, 9, h, w)
    squared = torch.where(peaks[:, None], squared, torch.full_like(squared, math.inf))
    nearest = squared.flatten(-2).amin(dim=-1).sqrt()
    present = torch.isfinite(keypoints).all(dim=-1)
    return torch.where(present, nearest, torch.full_like(nearest, math.nan))


def seatbelt_counts(pred_seatbelt: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(intersection, predicted, target) pixel counts of a batch: float64 (3,).

    pred_seatbelt: (B, 1, S, S) probabilities, thresholded at 0.5; target: (B, 1, S, S) in {0, 1}.
    """
    predicted = pred_seatbelt.float() > SEATBELT_THRESHOLD
    truth = target.to(predicted.device).float() > SEATBELT_THRESHOLD
    return torch.stack([(predicted & truth).sum(), predicted.sum(), truth.sum()]).double()


@dataclass
class ValidationMetrics:
    """Accumulates the metrics over validation batches; `summary()` gives the numbers.

    Counts are kept as tensors on the device of the first batch, so nothing is copied to the
    CPU until the end of validation.
    """

    image_size: int
    present: torch.Tensor | None = None  # (9,) ground-truth keypoints present
    matched: torch.Tensor | None = None  # (2, 9) matched at the two thresholds
    error_sum: torch.Tensor | None = None  # () sum of nearest distances of matches at the larger threshold
    seatbelt: torch.Tensor | None = None  # (3,) intersection, predicted, target pixels
    thresholds: tuple[float, float] = field(init=False)

    def __post_init__(self) -> None:
        self.thresholds = pck_thresholds(self.image_size)

    def update(
        self,
        pred_heatmaps: torch.Tensor,
        keypoints: torch.Tensor,
        pred_seatbelt: torch.Tensor | None = None,
        seatbelt: torch.Tensor | None = None,
    ) -> None:
        """Add one batch: predicted heatmaps (B, C, h, w), ground truth (B, P, 9, 2), and the
        predicted (B, 1, S, S) and target seatbelt masks when the network has a seatbelt head."""
        device = pred_heatmaps.device
        if self.present is None:
            self.present = torch.zeros(NUM_KEYPOINTS, device=device, dtype=torch.float64)
            self.matched = torch.zeros(len(self.thresholds), NUM_KEYPOINTS, device=device, dtype=torch.float64)
            self.error_sum = torch.zeros((), device=device, dtype=torch.float64)
            self.seatbelt = torch.zeros(3, device=device, dtype=torch.float64)
        distances = nearest_peak_distances(pred_heatmaps.detach(), keypoints, self.image_size)  # (B, P, 9)
        present = ~torch.isnan(distances)
        self.present += present.flatten(0, 1).sum(dim=0)
        for row, threshold in enumerate(self.thresholds):
            within = present & (distances <= threshold)
            self.matched[row] += within.flatten(0, 1).sum(dim=0)
        within_largest = present & (distances <= max(self.thresholds))
        self.error_sum += torch.where(within_largest, distances, torch.zeros_like(distances)).sum().double()
        if pred_seatbelt is not None and seatbelt is not None:
            self.seatbelt += seatbelt_counts(pred_seatbelt.detach(), seatbelt).to(device)

    def summary(self) -> dict:
        """{'pck5', 'pck10', 'mean_error_px', 'matched', 'present', 'seatbelt_iou', 'seatbelt_dice',
        'per_keypoint': {name: {'present', 'pck5', 'pck10'}}}; a PCK with no present keypoint is
        NaN, the mean error with no match is NaN."""
        if self.present is None:
            raise ValueError("no validation batch was added")
        present = self.present.cpu()
        matched = self.matched.cpu()
        total_present = float(present.sum())
        total_matched = matched.sum(dim=1)

        def ratio(numerator: float, denominator: float) -> float:
            return float(numerator) / float(denominator) if denominator > 0 else math.nan

        intersection, predicted, truth = (float(v) for v in self.seatbelt.cpu())
        union = predicted + truth - intersection
        result = {
            "pck5": ratio(total_matched[0], total_present),
            "pck10": ratio(total_matched[1], total_present),
            "mean_error_px": ratio(float(self.error_sum.cpu()), total_matched[-1]),
            "matched": int(total_matched[-1]),
            "present": int(total_present),
            "seatbelt_iou": intersection / union if union > 0 else 1.0,
            "seatbelt_dice": 2 * intersection / (predicted + truth) if predicted + truth > 0 else 1.0,
            "per_keypoint": {
                name: {
                    "present": int(present[k]),
                    "pck5": ratio(matched[0, k], present[k]),
                    "pck10": ratio(matched[1, k], present[k]),
                }
                for k, name in enumerate(KEYPOINT_NAMES)
            },
        }
        return result


def format_keypoint_table(summary: dict) -> str:
    """The per-keypoint PCK table as fixed-width text."""
    lines = [f"{'keypoint':<16}{'present':>8}{'PCK@5':>8}{'PCK@10':>8}"]
    for name, row in summary["per_keypoint"].items():
        lines.append(f"{name:<16}{row['present']:>8d}{row['pck5']:>8.3f}{row['pck10']:>8.3f}")
    return "\n".join(lines)

