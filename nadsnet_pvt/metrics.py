"""Validation metrics of NADS-Net: keypoint PCK and PCKt from heatmap peaks, seatbelt IoU / Dice.

Definitions (all on NADS-Net's outputs, no post-processing beyond peak finding):

- Peaks: in each heatmap channel, the cells that equal the maximum of their 3 x 3
  neighbourhood and exceed 0.1. A cell (gx, gy) of the stride-4 output sits at input pixel
  (start + gx * stride, start + gy * stride), start = stride / 2 - 0.5 (the convention the
  label heatmaps are rendered with, common.posedata.maps).
- Evaluated keypoints: a ground-truth keypoint is evaluated only when it lies in the S x S
  input frame, 0 <= x < S and 0 <= y < S. Missing keypoints (NaN) and labelled keypoints
  beyond the right or bottom edge (which the data may keep, as the seed did) are skipped by PCK, PCKt
  and the mean error alike.
- PCK@t: the fraction of evaluated ground-truth keypoints that have a peak of the same type
  (channel) within t input pixels (distance <= t). t = 5 and 10 px at 384 input, scaled by
  S / 384 for other input sizes S (at 64 px: 0.83 and 1.67 px, i.e. less than one cell).
- PCKt@0.2: the same with a threshold per person, 0.2 x that person's torso length: the
  distance from the neck to the midpoint of the two hips, or to the one hip labelled. A
  labelled neck or hip beyond the frame still defines the torso (only its coordinates are
  needed). A person without a neck, without both hips, or with a torso of length 0 is skipped
  and counted in `skipped_people`. Reported over all keypoints and over the arms (elbows and
  wrists).
- Mean error: the mean distance (input pixels) from each evaluated ground-truth keypoint
  matched at the larger PCK threshold to its nearest peak of the same type.
- Per-keypoint table: for each of the 9 keypoints, the PCK count, PCK@5, PCK@10, the PCKt
  count and PCKt@0.2.
- Seatbelt IoU and Dice: the predicted mask thresholded at 0.5 against the target, pixels
  summed over the whole validation set (IoU = I / U, Dice = 2 I / (|P| + |T|); both are 1
  when prediction and target are empty everywhere, NaN when no seatbelt was evaluated).

A ratio over zero keypoints is NaN. The 10th (background) heatmap channel, when present, is
ignored.

Accumulation stays on the device: `ValidationMetrics` keeps SUMS and COUNTS in one flat tensor
(`counts()`), which a distributed run can all-reduce and put back (`load_counts`, `reduce`)
before `summary()` copies it to the host once.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from common.posedata.pose import (
    HIPS,
    KEYPOINT_NAMES,
    LEFT_ELBOW,
    LEFT_WRIST,
    NECK,
    NUM_KEYPOINTS,
    RIGHT_ELBOW,
    RIGHT_WRIST,
    scale_for,
)

PEAK_THRESHOLD = 0.1
PCK_THRESHOLDS_AT_384 = (5.0, 10.0)
PCKT_TORSO_FRACTION = 0.2  # PCKt@0.2: a keypoint is found within this fraction of the torso length
SEATBELT_THRESHOLD = 0.5
ARM_KEYPOINTS = (RIGHT_WRIST, RIGHT_ELBOW, LEFT_ELBOW, LEFT_WRIST)

# Layout of ValidationMetrics' flat count tensor: (name, shape), in order.
COUNT_FIELDS: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("images", ()),  # samples added
    ("people", ()),  # people with at least one labelled keypoint
    ("skipped_people", ()),  # of those, people without a torso (no PCKt for them)
    ("pck_present", (NUM_KEYPOINTS,)),  # keypoints evaluated by PCK (in the frame)
    ("pck_matched", (len(PCK_THRESHOLDS_AT_384), NUM_KEYPOINTS)),  # matched at each PCK threshold
    ("error_sum", ()),  # input px: sum of nearest distances of matches at the larger threshold
    ("pckt_present", (NUM_KEYPOINTS,)),  # keypoints evaluated by PCKt (in the frame, torso known)
    ("pckt_matched", (NUM_KEYPOINTS,)),  # found within PCKT_TORSO_FRACTION x torso
    ("seatbelt_images", ()),  # samples whose seatbelt mask was evaluated
    ("seatbelt", (3,)),  # pixels: intersection, predicted, target
)
COUNT_SIZE = sum(math.prod(shape) for _, shape in COUNT_FIELDS)


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


def in_frame(keypoints: torch.Tensor, image_size: int) -> torch.Tensor:
    """Which keypoints are evaluated: (..., 2) (x, y) input pixels -> bool (...), True where
    0 <= x < image_size and 0 <= y < image_size (False for NaN and beyond the frame)."""
    inside = (keypoints >= 0) & (keypoints < image_size)  # NaN compares False
    return inside.all(dim=-1)


def nearest_peak_distances(heatmaps: torch.Tensor, keypoints: torch.Tensor, image_size: int) -> torch.Tensor:
    """For each ground-truth keypoint in the frame, the distance to the nearest peak of its type.

    heatmaps: (B, C >= 9, h, w) predicted heatmaps (stride = image_size / w).
    keypoints: (B, P, 9, 2) ground truth (x, y) in input pixels, NaN = missing / padding.
    Returns float32 (B, P, 9) in input pixels: NaN where the keypoint is not evaluated (missing,
    or outside the image_size x image_size frame, see `in_frame`), +inf where the channel has no peak.
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
    return torch.where(in_frame(keypoints, image_size), nearest, torch.full_like(nearest, math.nan))


def torso_lengths(keypoints: torch.Tensor) -> torch.Tensor:
    """Each person's torso length: (B, P, 9, 2) input pixels -> float32 (B, P) input pixels.

    The distance from the neck to the midpoint of the labelled hips (or to the one hip
    labelled). Labelled means finite: a neck or hip beyond the frame still counts. NaN where
    the person has no neck or no hip, or where the length is 0.
    """
    points = keypoints.float()
    hips = torch.stack([points[:, :, hip] for hip in HIPS], dim=2)  # (B, P, 2, 2); no index tensor to copy
    hip_labelled = torch.isfinite(hips).all(dim=-1, keepdim=True)  # (B, P, 2, 1)
    hip_count = hip_labelled.sum(dim=2)  # (B, P, 1)
    hip_sum = torch.where(hip_labelled, hips, torch.zeros_like(hips)).sum(dim=2)
    hip_centre = hip_sum / hip_count.clamp(min=1)
    length = torch.linalg.vector_norm(points[:, :, NECK] - hip_centre, dim=-1)  # NaN without a neck
    undefined = (hip_count[..., 0] == 0) | ~(length > 0)
    return torch.where(undefined, torch.full_like(length, math.nan), length)


def seatbelt_counts(pred_seatbelt: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(intersection, predicted, target) pixel counts of a batch: float64 (3,) (float32 on MPS).

    pred_seatbelt: (B, 1, S, S) probabilities, thresholded at 0.5; target: (B, 1, S, S) in {0, 1}.
    """
    predicted = pred_seatbelt.float() > SEATBELT_THRESHOLD
    truth = target.to(predicted.device).float() > SEATBELT_THRESHOLD
    counts = torch.stack([(predicted & truth).sum(), predicted.sum(), truth.sum()])
    return counts.to(_count_dtype(predicted.device))


def _count_dtype(device: torch.device) -> torch.dtype:
    # MPS has no float64; float32 counts stay exact up to 2^24 per entry.
    return torch.float32 if device.type == "mps" else torch.float64


def _ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, NaN over zero."""
    return float(numerator) / float(denominator) if denominator > 0 else math.nan


class ValidationMetrics:
    """Accumulates the metrics over validation batches; `summary()` gives the numbers.

    All sums and counts live in one flat tensor (layout `COUNT_FIELDS`, float64, float32 on MPS)
    on `device`, or on the device of the first batch when `device` is None; nothing is copied to
    the host before `summary()`. Each field is also an attribute (a view into that tensor), e.g.
    `pck_present` (9,). For a distributed run: `reduce(all_reduce)` (or `counts()` /
    `load_counts(t)`) between the last `update` and `summary()`.
    """

    def __init__(self, image_size: int, device: torch.device | str | None = None):
        self.image_size = int(image_size)
        self.thresholds = pck_thresholds(self.image_size)
        self._counts: torch.Tensor | None = None
        if device is not None:
            self._allocate(torch.device(device))

    def _allocate(self, device: torch.device) -> None:
        self._counts = torch.zeros(COUNT_SIZE, device=device, dtype=_count_dtype(device))
        offset = 0
        for name, shape in COUNT_FIELDS:
            size = math.prod(shape)
            setattr(self, name, self._counts[offset : offset + size].view(shape))
            offset += size

    def counts(self) -> torch.Tensor:
        """The flat (COUNT_SIZE,) tensor of sums and counts itself (not a copy): reducing it in
        place, e.g. with torch.distributed.all_reduce, changes this object's numbers."""
        if self._counts is None:
            raise ValueError("no validation batch was added and no device given: there are no counts yet")
        return self._counts

    def load_counts(self, counts: torch.Tensor) -> None:
        """Replace all sums and counts by `counts` ((COUNT_SIZE,), e.g. the sum over processes)."""
        if tuple(counts.shape) != (COUNT_SIZE,):
            raise ValueError(f"counts must have shape ({COUNT_SIZE},), got {tuple(counts.shape)}")
        if self._counts is None:
            self._allocate(counts.device)
        self._counts.copy_(counts)

    def reduce(self, fn: Callable[[torch.Tensor], torch.Tensor | None]) -> None:
        """Apply `fn` to the counts: it returns the new counts, or None when it changed them in
        place (torch.distributed.all_reduce does)."""
        result = fn(self.counts())
        if result is not None:
            self.load_counts(result)

    @torch.no_grad()
    def update(
        self,
        pred_heatmaps: torch.Tensor,
        keypoints: torch.Tensor,
        pred_seatbelt: torch.Tensor | None = None,
        seatbelt: torch.Tensor | None = None,
        evaluated: torch.Tensor | None = None,
    ) -> None:
        """Add one batch without a host sync.

        pred_heatmaps: (B, C >= 9, h, w); keypoints: (B, P, 9, 2) ground truth in input pixels,
        NaN-padded; pred_seatbelt (B, 1, S, S) probabilities and seatbelt (B, 1, S, S) in {0, 1}
        when the network has a seatbelt head (both or neither).
        evaluated: optional bool (B, P, 9): only these keypoints count in PCK, PCKt and the mean
            error (a subset such as the arms in new poses); torsos still come from every keypoint.
        """
        device = pred_heatmaps.device
        if self._counts is None:
            self._allocate(device)
        keypoints = keypoints.to(device=device, dtype=torch.float32)
        distances = nearest_peak_distances(pred_heatmaps.detach(), keypoints, self.image_size)  # (B, P, 9)
        if evaluated is not None:
            distances = torch.where(evaluated.to(device), distances, torch.full_like(distances, math.nan))
        self._add_pck(distances)
        self._add_pckt(distances, keypoints)
        self.images += pred_heatmaps.shape[0]
        if pred_seatbelt is not None and seatbelt is not None:
            self.seatbelt_images += pred_heatmaps.shape[0]
            self.seatbelt += seatbelt_counts(pred_seatbelt.detach(), seatbelt).to(self._counts)

    def _add_pck(self, distances: torch.Tensor) -> None:
        """PCK counts and the error sum from (B, P, 9) distances (NaN = not evaluated)."""
        evaluated = ~torch.isnan(distances)
        within = torch.stack([evaluated & (distances <= t) for t in self.thresholds])  # (T, B, P, 9)
        self.pck_present += evaluated.flatten(0, 1).sum(dim=0)
        self.pck_matched += within.flatten(1, 2).sum(dim=1)
        largest = max(range(len(self.thresholds)), key=self.thresholds.__getitem__)
        self.error_sum += torch.where(within[largest], distances, torch.zeros_like(distances)).sum()

    def _add_pckt(self, distances: torch.Tensor, keypoints: torch.Tensor) -> None:
        """PCKt counts and the people counts from (B, P, 9) distances and (B, P, 9, 2) keypoints."""
        torso = torso_lengths(keypoints)  # (B, P)
        has_torso = ~torch.isnan(torso)
        labelled = torch.isfinite(keypoints).all(dim=-1).any(dim=-1)  # (B, P): a person, not padding
        evaluated = ~torch.isnan(distances) & has_torso[..., None]
        found = evaluated & (distances <= PCKT_TORSO_FRACTION * torso[..., None])
        self.pckt_present += evaluated.flatten(0, 1).sum(dim=0)
        self.pckt_matched += found.flatten(0, 1).sum(dim=0)
        self.people += labelled.sum()
        self.skipped_people += (labelled & ~has_torso).sum()

    def summary(self) -> dict:
        """The numbers, on the host (one copy of the counts).

        Keys: 'pck5', 'pck10' (fractions over 'pck_present' keypoints), 'pckt', 'pckt_arms'
        (fractions over 'present' / 'present_arms' keypoints), 'mean_error_px' (input pixels
        over 'matched' keypoints), 'seatbelt_iou', 'seatbelt_dice' (in [0, 1]), the counts
        'images', 'people', 'skipped_people', 'pck_present', 'matched', 'present',
        'present_arms', and 'per_keypoint': {name: {'pck_present', 'pck5', 'pck10', 'present',
        'pckt'}}. A ratio over zero keypoints is NaN; seatbelt numbers are NaN when no seatbelt
        was evaluated. Raises ValueError when no batch was added.
        """
        if self._counts is None:
            raise ValueError("no validation batch was added")
        host = ValidationMetrics(self.image_size, device="cpu")
        host.load_counts(self._counts.detach().cpu().double())
        if float(host.images) == 0:
            raise ValueError("no validation batch was added")
        return host._summary_on_host()

    def _summary_on_host(self) -> dict:
        pck_present, pck_matched = self.pck_present, self.pck_matched
        present, found = self.pckt_present, self.pckt_matched
        arms = list(ARM_KEYPOINTS)
        matched = float(pck_matched[-1].sum())
        result = {
            "pck5": _ratio(pck_matched[0].sum(), pck_present.sum()),
            "pck10": _ratio(pck_matched[1].sum(), pck_present.sum()),
            "pckt": _ratio(found.sum(), present.sum()),
            "pckt_arms": _ratio(found[arms].sum(), present[arms].sum()),
            "mean_error_px": _ratio(self.error_sum, matched),
            **self._seatbelt_summary(),
            "images": int(self.images),
            "people": int(self.people),
            "skipped_people": int(self.skipped_people),
            "pck_present": int(pck_present.sum()),
            "matched": int(matched),
            "present": int(present.sum()),
            "present_arms": int(present[arms].sum()),
        }
        result["per_keypoint"] = {
            name: {
                "pck_present": int(pck_present[k]),
                "pck5": _ratio(pck_matched[0, k], pck_present[k]),
                "pck10": _ratio(pck_matched[1, k], pck_present[k]),
                "present": int(present[k]),
                "pckt": _ratio(found[k], present[k]),
            }
            for k, name in enumerate(KEYPOINT_NAMES)
        }
        return result

    def _seatbelt_summary(self) -> dict[str, float]:
        if float(self.seatbelt_images) == 0:
            return {"seatbelt_iou": math.nan, "seatbelt_dice": math.nan}
        intersection, predicted, truth = (float(v) for v in self.seatbelt)
        union = predicted + truth - intersection
        return {
            "seatbelt_iou": intersection / union if union > 0 else 1.0,
            "seatbelt_dice": 2 * intersection / (predicted + truth) if predicted + truth > 0 else 1.0,
        }


def format_keypoint_table(summary: dict) -> str:
    """The per-keypoint table of `ValidationMetrics.summary()` as fixed-width text: PCK count,
    PCK@5, PCK@10, PCKt count, PCKt@0.2 (NaN shown as 'nan')."""
    pckt = f"PCKt@{PCKT_TORSO_FRACTION:g}"
    lines = [f"{'keypoint':<16}{'n PCK':>8}{'PCK@5':>8}{'PCK@10':>8}{'n PCKt':>8}{pckt:>10}"]
    for name, row in summary["per_keypoint"].items():
        lines.append(
            f"{name:<16}{row['pck_present']:>8d}{row['pck5']:>8.3f}{row['pck10']:>8.3f}"
            f"{row['present']:>8d}{row['pckt']:>10.3f}"
        )
    return "\n".join(lines)


def format_overall(summary: dict) -> str:
    """The overall numbers of `ValidationMetrics.summary()` as two lines of text."""
    return (
        f"keypoints: PCK@5 {summary['pck5']:.3f}  PCK@10 {summary['pck10']:.3f} (of {summary['pck_present']})  "
        f"mean error {summary['mean_error_px']:.2f} px ({summary['matched']} matched)\n"
        f"PCKt@{PCKT_TORSO_FRACTION:g} {summary['pckt']:.3f} (of {summary['present']})  "
        f"arms {summary['pckt_arms']:.3f} (of {summary['present_arms']})  "
        f"people without a torso: {summary['skipped_people']} of {summary['people']}   "
        f"seatbelt: IoU {summary['seatbelt_iou']:.3f}  Dice {summary['seatbelt_dice']:.3f}"
    )
