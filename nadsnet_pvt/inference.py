"""From NADS-Net's maps to people: heatmap peaks grouped into skeletons by the PAFs.

OpenPose's bottom-up grouping (Cao et al. 2017), adapted to NADS-Net's 9-keypoint tree
(common.posedata.pose.LIMBS, rooted at the neck):

1. Peaks: in each keypoint heatmap, the cells that are the maximum of their 3 x 3
   neighbourhood and exceed 0.1 (`nadsnet_pvt.metrics.find_peaks`). Where two touching cells
   tie (a plateau), only the first in raster order is kept. Each peak may be moved by a
   sub-cell offset from a parabola fitted to the log of the heat at it and its two neighbours
   per axis (exact for an isolated Gaussian, which is what the heatmaps are trained to be).
   Positions are input pixels: cell g sits at g * stride + stride / 2 - 0.5.
2. Limb scores: for a limb (a -> b), every pair (peak of a, peak of b) is scored by sampling
   the limb's PAF at `PAF_SAMPLES` points evenly spaced on the segment between them: the mean
   of dot(PAF, unit vector of the segment), and the fraction of samples whose dot exceeds
   `PAF_SAMPLE_THRESHOLD`. A pair is a candidate when that fraction is at least
   `MIN_FRACTION_ABOVE` and the mean is positive (OpenPose's criteria; its distance prior,
   which penalises limbs longer than half the frame, is left out: a front-row occupant's torso
   can span more than half of an in-cabin frame).
   The PAFs are sampled at cell coordinate (pixel / stride), not at cell centres, because the
   label PAFs are drawn that way (a seed quirk, common.posedata.maps) and the network learned them so.
3. Matching: candidates are accepted greedily by mean score, each peak used at most once per
   limb.
4. People grow outwards from the necks along the tree: every neck peak starts a person; a
   shoulder or hip joins the neck it is matched to, an elbow its shoulder, a wrist its elbow.
   Only peaks already in a person are matched onwards, so a stray peak cannot take a partner
   from a real one. Keypoints whose chain has no neck are dropped: without the neck nothing
   tells which left arm, right arm and hips belong together, so they would come out as
   several one-limb "people" and the people count would be wrong. People with fewer than
   `MIN_KEYPOINTS` keypoints (a lone neck peak, say) are dropped too.

Person score = (sum of its keypoints' peak heat + sum of its limbs' mean PAF scores) / 17, in
about [0, 1]: 1 for a complete person on ideal maps, lower for weak or missing parts.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from common.posedata.pose import LIMBS, NECK, NUM_KEYPOINTS, NUM_LIMBS, NUM_PAF_CHANNELS
from nadsnet_pvt.metrics import PEAK_THRESHOLD, cell_centres, find_peaks

PAF_SAMPLES = 10  # points sampled on each candidate limb segment
PAF_SAMPLE_THRESHOLD = 0.05  # a sample "agrees" when dot(PAF, unit) exceeds this (OpenPose's thre2)
MIN_FRACTION_ABOVE = 0.8  # of the samples must agree (OpenPose)
MIN_KEYPOINTS = 2  # a person needs its neck and at least one more keypoint
_LOG_FLOOR = 1e-3  # heat below this is treated as this before taking logs (network outputs can be <= 0)


class People(NamedTuple):
    """People found in one sample.

    keypoints: float32 (P, 9, 3), (x, y, score) per keypoint; x, y in input pixels (NaN where
        the keypoint was not found), score = the peak's heat (0 where not found).
    scores: float32 (P,), person scores in about [0, 1] (see the module docstring), descending.
    """

    keypoints: np.ndarray
    scores: np.ndarray


def _tree_order() -> tuple[int, ...]:
    """Limb indices ordered so that each limb's from-keypoint is reached before it (from the neck)."""
    reached, order = {NECK}, []
    remaining = list(range(NUM_LIMBS))
    while remaining:
        ready = [limb for limb in remaining if LIMBS[limb][0] in reached]
        if not ready:
            raise ValueError(f"common.posedata.pose.LIMBS is not a tree rooted at the neck: {LIMBS}")
        for limb in ready:
            reached.add(LIMBS[limb][1])
            remaining.remove(limb)
            order.append(limb)
    return tuple(order)


_LIMB_ORDER = _tree_order()


def _drop_plateau_twins(peaks: torch.Tensor) -> torch.Tensor:
    """bool (C, h, w) peaks -> the same without peaks that touch an earlier peak (raster order).

    After 3 x 3 max pooling, two touching peaks can only be cells of equal heat (a plateau);
    keeping one avoids two candidates for one keypoint.
    """
    padded = F.pad(peaks[None].float(), (1, 1, 1, 0))[0]  # one column either side, one row above
    height, width = peaks.shape[-2:]
    earlier_neighbours = (
        padded[:, 1:, 0:width]  # left
        + padded[:, 0:height, 0:width]  # up-left
        + padded[:, 0:height, 1 : width + 1]  # up
        + padded[:, 0:height, 2 : width + 2]  # up-right
    )
    return peaks & (earlier_neighbours == 0)


def _subcell_offsets(heat: np.ndarray, channels: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Sub-cell offsets (N, 2) = (dx, dy) in cells, each in [-0.5, 0.5], of N peaks.

    heat: (C, h, w). A parabola through the log heat at the peak and its two neighbours along
    each axis; a neighbour outside the map is replaced by the opposite one (no shift that way).
    """
    height, width = heat.shape[-2:]
    logs = np.log(np.maximum(heat, _LOG_FLOOR))
    centre = logs[channels, ys, xs]
    offsets = np.zeros((len(channels), 2), dtype=np.float64)
    for axis, (size, index) in enumerate(((width, xs), (height, ys))):
        before, after = index - 1, index + 1
        before = np.where(before < 0, after, before)
        after = np.where(after >= size, before, after)
        if axis == 0:
            low, high = logs[channels, ys, before], logs[channels, ys, after]
        else:
            low, high = logs[channels, before, xs], logs[channels, after, xs]
        curvature = low - 2.0 * centre + high  # <= 0 at a maximum
        safe = np.where(curvature < 0, curvature, -1.0)
        offsets[:, axis] = np.where(curvature < 0, 0.5 * (low - high) / safe, 0.0)
    return np.clip(offsets, -0.5, 0.5)


def find_keypoint_candidates(
    heatmaps: torch.Tensor | np.ndarray, image_size: int, threshold: float = PEAK_THRESHOLD, subcell: bool = True
) -> list[np.ndarray]:
    """Peaks of each keypoint heatmap of one sample.

    heatmaps: (C >= 9, h, w), any device (a background channel, if any, is ignored).
    Returns 9 float64 arrays (N_k, 3): (x, y) in input pixels and the peak's heat.
    """
    heat = torch.as_tensor(heatmaps)[:NUM_KEYPOINTS].detach().float().cpu()
    if heat.dim() != 3 or heat.shape[0] != NUM_KEYPOINTS:
        raise ValueError(f"heatmaps must be (C >= {NUM_KEYPOINTS}, h, w), got {tuple(heatmaps.shape)}")
    height, width = heat.shape[-2:]
    peaks = _drop_plateau_twins(find_peaks(heat[None], threshold)[0])
    channels, ys, xs = (index.numpy() for index in torch.nonzero(peaks, as_tuple=True))
    heat_np = heat.numpy()
    stride_x, stride_y = image_size / width, image_size / height
    positions = np.stack(
        [cell_centres(width, stride_x).numpy()[xs], cell_centres(height, stride_y).numpy()[ys]], axis=1
    ).astype(np.float64)
    if subcell and len(channels):
        positions += _subcell_offsets(heat_np, channels, ys, xs) * (stride_x, stride_y)
    candidates = np.concatenate([positions, heat_np[channels, ys, xs][:, None]], axis=1)
    return [candidates[channels == keypoint] for keypoint in range(NUM_KEYPOINTS)]


def score_limb_pairs(
    paf: np.ndarray, starts: np.ndarray, ends: np.ndarray, stride: float, samples: int = PAF_SAMPLES
) -> tuple[np.ndarray, np.ndarray]:
    """PAF agreement of every (start, end) pair of one limb.

    paf: (2, h, w) the limb's x and y channels; starts (Na, 2), ends (Nb, 2): input pixels.
    Returns (mean, fraction), each float64 (Na, Nb): the mean over `samples` points of
    dot(PAF, unit vector start -> end), and the fraction of points where it exceeds
    PAF_SAMPLE_THRESHOLD. Zero-length pairs score 0.
    """
    height, width = paf.shape[-2:]
    delta = ends[None, :, :] - starts[:, None, :]  # (Na, Nb, 2)
    length = np.linalg.norm(delta, axis=-1, keepdims=True)
    unit = np.divide(delta, length, out=np.zeros_like(delta), where=length > 1e-8)
    steps = np.linspace(0.0, 1.0, samples)[:, None]  # (K, 1)
    points = starts[:, None, None, :] + steps * delta[:, :, None, :]  # (Na, Nb, K, 2) pixels
    # Label PAFs put limb endpoints at pixel / stride (cell index, not cell centre).
    cells_x = np.clip(np.rint(points[..., 0] / stride), 0, width - 1).astype(np.intp)
    cells_y = np.clip(np.rint(points[..., 1] / stride), 0, height - 1).astype(np.intp)
    dots = paf[0, cells_y, cells_x] * unit[..., 0:1] + paf[1, cells_y, cells_x] * unit[..., 1:2]
    return dots.mean(axis=-1), (dots > PAF_SAMPLE_THRESHOLD).mean(axis=-1)


def match_limb(mean: np.ndarray, fraction: np.ndarray) -> list[tuple[int, int, float]]:
    """Greedy one-to-one matching of a limb's (Na, Nb) pair scores -> [(start, end, mean score)],
    best first, over the pairs that pass the PAF criteria."""
    valid = (fraction >= MIN_FRACTION_ABOVE) & (mean > 0)
    starts, ends = np.nonzero(valid)
    order = np.argsort(-mean[starts, ends], kind="stable")
    used_starts, used_ends, matches = set(), set(), []
    for start, end in zip(starts[order].tolist(), ends[order].tolist()):
        if start in used_starts or end in used_ends:
            continue
        used_starts.add(start)
        used_ends.add(end)
        matches.append((start, end, float(mean[start, end])))
    return matches


def group_people(
    heatmaps: torch.Tensor | np.ndarray,
    pafs: torch.Tensor | np.ndarray,
    image_size: int,
    peak_threshold: float = PEAK_THRESHOLD,
    subcell: bool = True,
    min_keypoints: int = MIN_KEYPOINTS,
) -> People:
    """People of ONE sample from its NADS-Net maps (module docstring: the method).

    heatmaps: (C >= 9, h, w); pafs: (16, h, w), channels 2k, 2k + 1 = limb k's x, y; torch
    (any device) or numpy. image_size: input side S in pixels (stride = S / w).
    Returns People: keypoints float32 (P, 9, 3) = (x, y, score) in input pixels, NaN x, y
    where not found; scores float32 (P,), best first.
    """
    pafs = torch.as_tensor(pafs).detach().float().cpu().numpy()
    if pafs.ndim != 3 or pafs.shape[0] != NUM_PAF_CHANNELS:
        raise ValueError(f"pafs must be ({NUM_PAF_CHANNELS}, h, w), got {pafs.shape}")
    candidates = find_keypoint_candidates(heatmaps, image_size, peak_threshold, subcell)
    stride = image_size / pafs.shape[-1]
    # peak_of[p, k]: index into candidates[k] of person p's keypoint k, -1 when absent.
    peak_of = np.full((len(candidates[NECK]), NUM_KEYPOINTS), -1, dtype=np.intp)
    peak_of[:, NECK] = np.arange(len(candidates[NECK]))
    limb_score_sum = np.zeros(len(peak_of))
    for limb in _LIMB_ORDER:
        joint_from, joint_to = LIMBS[limb]
        owners = np.nonzero(peak_of[:, joint_from] >= 0)[0]  # people that have the from-keypoint
        if len(owners) == 0 or len(candidates[joint_to]) == 0:
            continue
        starts = candidates[joint_from][peak_of[owners, joint_from], :2]
        mean, fraction = score_limb_pairs(pafs[2 * limb : 2 * limb + 2], starts, candidates[joint_to][:, :2], stride)
        for owner_row, end, score in match_limb(mean, fraction):
            person = owners[owner_row]
            peak_of[person, joint_to] = end
            limb_score_sum[person] += score
    return _assemble_people(candidates, peak_of, limb_score_sum, min_keypoints)


def _assemble_people(
    candidates: Sequence[np.ndarray], peak_of: np.ndarray, limb_score_sum: np.ndarray, min_keypoints: int
) -> People:
    """Peak indices (P, 9) -> People, dropping people with fewer than `min_keypoints` keypoints."""
    keypoints = np.full((len(peak_of), NUM_KEYPOINTS, 3), np.nan, dtype=np.float64)
    keypoints[..., 2] = 0.0
    for keypoint in range(NUM_KEYPOINTS):
        found = peak_of[:, keypoint] >= 0
        keypoints[found, keypoint] = candidates[keypoint][peak_of[found, keypoint]]
    counts = (peak_of >= 0).sum(axis=1)
    scores = (keypoints[..., 2].sum(axis=1) + limb_score_sum) / (NUM_KEYPOINTS + NUM_LIMBS)
    keep = np.nonzero(counts >= min_keypoints)[0]
    keep = keep[np.argsort(-scores[keep], kind="stable")]
    return People(keypoints[keep].astype(np.float32), scores[keep].astype(np.float32))


def _model_device(net: torch.nn.Module, fallback: torch.device) -> torch.device:
    parameter = next(net.parameters(), None)
    return parameter.device if parameter is not None else fallback


def predict_people(
    net: torch.nn.Module, images: torch.Tensor, image_size: int, **grouping
) -> tuple[list[People], torch.Tensor | None]:
    """Run NADS-Net on a batch and group each sample's peaks into people.

    images: (B, 3, S, S) ImageNet-normalised RGB (moved to the network's device).
    The network runs in eval mode under torch.no_grad() (its previous mode is restored);
    `grouping` goes to `group_people`.
    Returns (people per sample (B People), seatbelt probabilities float32 (B, 1, S, S) in
    [0, 1] on the CPU, or None for a network without a seatbelt head).
    """
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            outputs = net(images.to(_model_device(net, images.device)))
    finally:
        net.train(was_training)
    # One transfer per map for the whole batch; grouping runs on the CPU.
    heatmaps, pafs = outputs[0].float().cpu(), outputs[1].float().cpu()
    seatbelt = outputs[2].float().cpu() if len(outputs) > 2 and outputs[2] is not None else None
    people = [group_people(heatmaps[i], pafs[i], image_size, **grouping) for i in range(len(heatmaps))]
    return people, seatbelt
