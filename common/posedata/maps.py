"""Label maps rendered from keypoints: keypoint heatmaps and part affinity fields.

The maps live on a grid of `height x width` cells with a `stride` in input pixels (1 for the
GAN's full-resolution input, 4 for NADS-Net's output). Keypoints are (x, y) in input pixels;
NaN (any non-finite value) marks a missing keypoint.

Heatmap (one channel per keypoint): cell (gx, gy) sits at input pixel
(start + gx * stride, start + gy * stride), start = stride / 2 - 0.5. Each present keypoint adds
exp(-e), e = d^2 / (2 sigma^2), to the cells with e <= HEATMAP_EXPONENT_CUTOFF; the channel is
clipped to at most 1. All terms are non-negative, so clipping the sum once equals the seed's
clipping after every addition. The optional background channel is clip(1 - max, 0, 1).

PAF (channels 2k, 2k + 1 = x, y of limb k in common.posedata.pose.LIMBS): endpoints are divided by the
stride (PAF cells are compared at their integer index, not at their centre: a seed quirk the
trained networks depend on). A cell gets the limb's unit vector when it lies in the limb's
bounding box widened by `threshold` (Python half-to-even rounding, upper bound exclusive) and
within `threshold` of the limb's infinite line. Where several people's same limb cover a cell,
the vectors are averaged.

Both the numpy renderers (one sample, used by the data loader) and the torch renderers (a
batch, on any device) touch only the cells a keypoint or limb can reach: a window of about
3 sigma around each keypoint, and a band a few cells wide along each limb. The seed evaluated
every cell of the grid for every keypoint and limb.

Distances and cut-offs are computed in float64, as the seed's numpy code did, so that cells
on a boundary fall on the same side as in the seed; the maps are float32.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from common.posedata.pose import (
    HEATMAP_SIGMA,
    LIMBS,
    NUM_KEYPOINTS,
    NUM_LIMBS,
    NUM_PAF_CHANNELS,
    OUTPUT_STRIDE,
    check_image_size,
    scale_for,
)

# Cells with e = d^2 / (2 sigma^2) above this get no heat: exp(-4.6052) ~= 0.01.
HEATMAP_EXPONENT_CUTOFF = 4.6052
PAF_THRESHOLD = 1.0  # cells, at every stride
MIN_LIMB_LENGTH = 1e-8  # cells; shorter limbs have no direction and draw nothing

_LIMB_FROM = [start for start, _ in LIMBS]
_LIMB_TO = [end for _, end in LIMBS]


def _cell_start(stride: float) -> float:
    """Input-pixel coordinate of cell 0's centre."""
    return stride / 2.0 - 0.5


def _heatmap_reach(sigma: float) -> float:
    """Largest distance (input pixels) at which a keypoint still heats a cell."""
    return math.sqrt(2.0 * HEATMAP_EXPONENT_CUTOFF) * sigma


def _paf_band_half_width(threshold: float) -> int:
    """Cells either side of a limb's line, along its minor axis, that can be within `threshold`.

    Along the minor axis a cell within `threshold` of the line is at most threshold / |u_major|
    <= threshold * sqrt(2) away from it; one more cell absorbs floating-point slack.
    """
    return int(math.floor(threshold * math.sqrt(2.0))) + 1


def _check_grid(height: int, width: int, stride: float) -> None:
    if height <= 0 or width <= 0:
        raise ValueError(f"grid must have positive height and width, got {height} x {width}")
    if stride <= 0:
        raise ValueError(f"stride must be positive, got {stride}")


# --------------------------------------------------------------------------------------------
# numpy: one sample
# --------------------------------------------------------------------------------------------


def _as_people(people: Any) -> np.ndarray:
    """array-like (P, 9, 2) -> float64 (P, 9, 2); an empty input may have any shape with size 0."""
    array = np.asarray(people, dtype=np.float64)
    if array.size == 0:
        return array.reshape(0, NUM_KEYPOINTS, 2)
    if array.ndim != 3 or array.shape[1:] != (NUM_KEYPOINTS, 2):
        raise ValueError(f"people must have shape (P, {NUM_KEYPOINTS}, 2), got {array.shape}")
    return array


def _heatmap_window(centre: float, reach: float, start: float, stride: float, cells: int) -> tuple[int, int]:
    """[first, end) cell indices along one axis that may lie within `reach` of `centre`."""
    first = math.floor((centre - reach - start) / stride)
    end = math.floor((centre + reach - start) / stride) + 2  # one spare cell against rounding
    return max(first, 0), min(end, cells)


def render_heatmaps(
    people: Any, height: int, width: int, stride: float, sigma: float = HEATMAP_SIGMA, background: bool = False
) -> np.ndarray:
    """Keypoint heatmaps of one sample.

    people: array-like (P, 9, 2), (x, y) in input pixels, NaN = missing; P may be 0.
    height, width: grid size in cells; stride: input pixels per cell; sigma: input pixels.
    Returns float32 (9, height, width) in [0, 1], or (10, height, width) with the background
    channel last when `background`.
    """
    _check_grid(height, width, stride)
    people = _as_people(people)
    maps = np.zeros((NUM_KEYPOINTS + int(background), height, width), dtype=np.float32)
    start, reach = _cell_start(stride), _heatmap_reach(sigma)
    present = np.isfinite(people).all(axis=-1)
    for person, channel in zip(*np.nonzero(present)):
        centre_x, centre_y = people[person, channel]
        x0, x1 = _heatmap_window(centre_x, reach, start, stride, width)
        y0, y1 = _heatmap_window(centre_y, reach, start, stride, height)
        if x0 >= x1 or y0 >= y1:
            continue
        squared_dx = (np.arange(x0, x1) * stride + start - centre_x) ** 2
        squared_dy = (np.arange(y0, y1) * stride + start - centre_y) ** 2
        # Same operation order as the seed, so boundary cells fall on the same side.
        exponent = (squared_dx[None, :] + squared_dy[:, None]) / 2.0 / sigma / sigma
        heat = np.where(exponent <= HEATMAP_EXPONENT_CUTOFF, np.exp(-exponent), 0.0)
        window = maps[channel, y0:y1, x0:x1]
        np.minimum(window + heat, 1.0, out=window)
    if background:
        maps[NUM_KEYPOINTS] = np.clip(1.0 - maps[:NUM_KEYPOINTS].max(axis=0), 0.0, 1.0)
    return maps


def _limb_cells(
    start: np.ndarray, end: np.ndarray, height: int, width: int, threshold: float
) -> tuple[np.ndarray, np.ndarray, float, float] | None:
    """Cells one limb writes: (ys, xs, u_x, u_y), or None if it writes none.

    start, end: (2,) limb endpoints in cells. Walks the limb's major axis (x when |u_x| >= |u_y|)
    over its bounding box and tests a few cells across it, so the work grows with the limb's
    length rather than its bounding-box area. Each cell appears at most once.
    """
    delta = end - start
    length = math.sqrt(delta[0] * delta[0] + delta[1] * delta[1])
    if length < MIN_LIMB_LENGTH:
        return None
    unit_x, unit_y = delta[0] / length, delta[1] / length
    x_first = max(0, int(round(float(min(start[0], end[0]) - threshold))))
    x_end = min(width, int(round(float(max(start[0], end[0]) + threshold))))
    y_first = max(0, int(round(float(min(start[1], end[1]) - threshold))))
    y_end = min(height, int(round(float(max(start[1], end[1]) + threshold))))
    if x_first >= x_end or y_first >= y_end:
        return None
    across = np.arange(-_paf_band_half_width(threshold), _paf_band_half_width(threshold) + 2)
    if abs(unit_x) >= abs(unit_y):
        xs = np.arange(x_first, x_end, dtype=np.float64)
        line_y = start[1] + (xs - start[0]) * (unit_y / unit_x)
        ys = np.floor(line_y)[:, None] + across[None, :]
        xs = np.broadcast_to(xs[:, None], ys.shape)
        inside = (ys >= y_first) & (ys < y_end)
    else:
        ys = np.arange(y_first, y_end, dtype=np.float64)
        line_x = start[0] + (ys - start[1]) * (unit_x / unit_y)
        xs = np.floor(line_x)[:, None] + across[None, :]
        ys = np.broadcast_to(ys[:, None], xs.shape)
        inside = (xs >= x_first) & (xs < x_end)
    distance = np.abs((xs - start[0]) * unit_y - (ys - start[1]) * unit_x)
    on_limb = inside & (distance <= threshold)
    return ys[on_limb].astype(np.intp), xs[on_limb].astype(np.intp), unit_x, unit_y


def render_pafs(people: Any, height: int, width: int, stride: float, threshold: float = PAF_THRESHOLD) -> np.ndarray:
    """Part affinity fields of one sample.

    people: array-like (P, 9, 2), (x, y) in input pixels, NaN = missing; P may be 0.
    height, width: grid size in cells; stride: input pixels per cell; threshold: cells.
    Returns float32 (16, height, width) in [-1, 1]: limb k's unit vector (x, y) in channels
    2k, 2k + 1 on the cells it covers, averaged where several people's limb k overlap.
    """
    _check_grid(height, width, stride)
    people = _as_people(people) / stride
    fields = np.zeros((NUM_PAF_CHANNELS, height, width), dtype=np.float32)
    counts = np.zeros((height, width), dtype=np.float32)  # writers per cell, reset after each limb
    for limb, (joint_from, joint_to) in enumerate(LIMBS):
        written = []
        for person in people:
            if not (np.isfinite(person[joint_from]).all() and np.isfinite(person[joint_to]).all()):
                continue
            cells = _limb_cells(person[joint_from], person[joint_to], height, width, threshold)
            if cells is None:
                continue
            ys, xs, unit_x, unit_y = cells
            fields[2 * limb, ys, xs] += unit_x
            fields[2 * limb + 1, ys, xs] += unit_y
            counts[ys, xs] += 1.0
            written.append((ys, xs))
        if len(written) > 1:
            ys = np.concatenate([cells_ys for cells_ys, _ in written])
            xs = np.concatenate([cells_xs for _, cells_xs in written])
            # Repeated cells are assigned the same quotient twice: harmless.
            fields[2 * limb : 2 * limb + 2, ys, xs] /= counts[ys, xs]
        for ys, xs in written:
            counts[ys, xs] = 0.0
    return fields


def sample_label_maps(keypoints: Any, image_size: int, background: bool = False) -> dict[str, np.ndarray]:
    """All label maps of one sample (numpy, float32).

    keypoints: (P, 9, 2) input pixels of an `image_size` square input, NaN = missing.
    Returns "heatmaps" (9|10, S/4, S/4) and "pafs" (16, S/4, S/4) for NADS-Net, "gan_heatmaps"
    (9, S, S) and "gan_pafs" (16, S, S) for the generator; sigma = 7 * S / 384 input pixels.
    """
    check_image_size(image_size)
    sigma = HEATMAP_SIGMA * scale_for(image_size)
    cells = image_size // OUTPUT_STRIDE
    return {
        "heatmaps": render_heatmaps(keypoints, cells, cells, OUTPUT_STRIDE, sigma, background),
        "pafs": render_pafs(keypoints, cells, cells, OUTPUT_STRIDE),
        "gan_heatmaps": render_heatmaps(keypoints, image_size, image_size, 1, sigma),
        "gan_pafs": render_pafs(keypoints, image_size, image_size, 1),
    }


# --------------------------------------------------------------------------------------------
# torch: a batch, on the keypoints' device
# --------------------------------------------------------------------------------------------


def _compute_dtype(device: torch.device) -> torch.dtype:
    # MPS has no float64; there the boundary cells may differ from the seed's in rare cases.
    return torch.float32 if device.type == "mps" else torch.float64


def _check_keypoints(keypoints: torch.Tensor) -> None:
    if keypoints.dim() != 4 or keypoints.shape[2:] != (NUM_KEYPOINTS, 2):
        raise ValueError(f"keypoints must have shape (B, P, {NUM_KEYPOINTS}, 2), got {tuple(keypoints.shape)}")


def render_heatmaps_torch(
    keypoints: torch.Tensor,
    height: int,
    width: int,
    stride: float,
    sigma: float = HEATMAP_SIGMA,
    background: bool = False,
) -> torch.Tensor:
    """Keypoint heatmaps of a batch; the same numbers as `render_heatmaps` per sample.

    keypoints: (B, P, 9, 2) float, (x, y) input pixels, NaN = missing or padding.
    Returns float32 (B, 9|10, height, width) on keypoints.device.
    """
    _check_grid(height, width, stride)
    _check_keypoints(keypoints)
    device, dtype = keypoints.device, _compute_dtype(keypoints.device)
    batch, num_people = keypoints.shape[:2]
    start, reach = _cell_start(stride), _heatmap_reach(sigma)
    # A fixed window of cells around the cell nearest each keypoint covers everything in reach.
    radius = math.ceil(reach / stride) + 1
    offsets = torch.arange(-radius, radius + 1, device=device, dtype=dtype)

    points = keypoints.to(dtype)
    present = torch.isfinite(points).all(dim=-1)  # (B, P, 9)
    points = torch.where(present[..., None], points, torch.zeros((), device=device, dtype=dtype))
    # Nearest cell, clamped so that far-away keypoints give valid (all-cold) windows.
    nearest = torch.round((points - start) / stride)
    nearest = torch.stack(
        [
            nearest[..., 0].clamp(-radius - 1.0, width + radius + 1.0),
            nearest[..., 1].clamp(-radius - 1.0, height + radius + 1.0),
        ],
        dim=-1,
    )
    cells = nearest[..., None] + offsets  # (B, P, 9, 2, K): candidate cell indices per axis
    squared = (cells * stride + start - points[..., None]) ** 2
    squared_dx, squared_dy = squared[..., 0, :], squared[..., 1, :]  # (B, P, 9, K)
    exponent = (squared_dx[..., None, :] + squared_dy[..., :, None]) / 2.0 / sigma / sigma  # (B, P, 9, Ky, Kx)
    cells_x, cells_y = cells[..., 0, :], cells[..., 1, :]
    inside_x = (cells_x >= 0) & (cells_x < width)
    inside_y = (cells_y >= 0) & (cells_y < height)
    keep = (
        (exponent <= HEATMAP_EXPONENT_CUTOFF)
        & inside_x[..., None, :]
        & inside_y[..., :, None]
        & present[..., None, None]
    )
    heat = torch.where(keep, torch.exp(-exponent), torch.zeros((), device=device, dtype=dtype))

    sample = torch.arange(batch, device=device).view(batch, 1, 1)
    channel = torch.arange(NUM_KEYPOINTS, device=device).view(1, 1, NUM_KEYPOINTS)
    plane = (sample * NUM_KEYPOINTS + channel).expand(batch, num_people, NUM_KEYPOINTS)
    index_x = cells_x.clamp(0, width - 1).long()
    index_y = cells_y.clamp(0, height - 1).long()
    flat = (plane[..., None, None] * height + index_y[..., :, None]) * width + index_x[..., None, :]
    # Accumulated in float32: a handful of terms per cell.
    maps = torch.zeros(batch, NUM_KEYPOINTS, height, width, device=device, dtype=torch.float32)
    maps.view(-1).index_add_(0, flat.reshape(-1), heat.to(torch.float32).reshape(-1))
    maps.clamp_(max=1.0)
    if background:
        backdrop = (1.0 - maps.amax(dim=1, keepdim=True)).clamp_(0.0, 1.0)
        maps = torch.cat([maps, backdrop], dim=1)
    return maps


def render_pafs_torch(
    keypoints: torch.Tensor, height: int, width: int, stride: float, threshold: float = PAF_THRESHOLD
) -> torch.Tensor:
    """Part affinity fields of a batch; the same numbers as `render_pafs` per sample.

    keypoints: (B, P, 9, 2) float, (x, y) input pixels, NaN = missing or padding.
    Returns float32 (B, 16, height, width) on keypoints.device.
    """
    _check_grid(height, width, stride)
    _check_keypoints(keypoints)
    limbs = _limb_geometry(keypoints, stride, height, width, threshold)
    xs, ys, on_limb = _limb_candidate_cells(limbs, height, width, threshold)
    return _average_limb_vectors(limbs, xs, ys, on_limb, height, width)


def _limb_geometry(keypoints: torch.Tensor, stride: float, height: int, width: int, threshold: float) -> dict:
    """Per limb (B, P, 8): endpoints in cells, unit vector, validity and the bounding box widened
    by the threshold ([first, end) per axis, rounded as the seed rounded it)."""
    dtype = _compute_dtype(keypoints.device)
    zero = torch.zeros((), device=keypoints.device, dtype=dtype)
    points = keypoints.to(dtype) / stride
    start, end = points[:, :, _LIMB_FROM], points[:, :, _LIMB_TO]  # (B, P, 8, 2) cells
    delta = end - start
    length = torch.sqrt(delta[..., 0] * delta[..., 0] + delta[..., 1] * delta[..., 1])
    valid = torch.isfinite(start).all(-1) & torch.isfinite(end).all(-1) & (length >= MIN_LIMB_LENGTH)
    start = torch.where(valid[..., None], start, zero)
    end = torch.where(valid[..., None], end, zero)
    unit = torch.where(valid[..., None], delta / torch.where(valid, length, 1.0)[..., None], zero)
    box_first = torch.round(torch.minimum(start, end) - threshold).clamp(min=0)  # (B, P, 8, 2)
    box_end = torch.round(torch.maximum(start, end) + threshold)
    box_end = torch.stack([box_end[..., 0].clamp(max=width), box_end[..., 1].clamp(max=height)], dim=-1)
    return {"start": start, "unit": unit, "valid": valid, "box_first": box_first, "box_end": box_end}


def _limb_candidate_cells(limbs: dict, height: int, width: int, threshold: float):
    """Walk each limb's major axis across the whole grid and test a few cells across it; the
    bounding box then trims the walk. Returns xs, ys (B, P, 8, L, A) cell coordinates and
    on_limb, the candidates within `threshold` of the limb's line inside its box."""
    start, unit, valid = limbs["start"], limbs["unit"], limbs["valid"]
    device, dtype = start.device, start.dtype
    x_major = unit[..., 0].abs() >= unit[..., 1].abs()  # (B, P, 8); axis 0 of the last dimension is x
    major_axis, minor_axis = (~x_major).long(), x_major.long()

    def along(values: torch.Tensor, axis: torch.Tensor) -> torch.Tensor:
        return values.gather(-1, axis[..., None]).squeeze(-1)

    start_major, start_minor = along(start, major_axis), along(start, minor_axis)
    slope = along(unit, minor_axis) / torch.where(valid, along(unit, major_axis), 1.0)
    steps = torch.arange(max(height, width), device=device, dtype=dtype)  # (L,)
    line_minor = start_minor[..., None] + (steps - start_major[..., None]) * slope[..., None]  # (B, P, 8, L)
    band = _paf_band_half_width(threshold)
    line_minor = line_minor.floor().clamp(-band - 2.0, max(height, width) + band + 2.0)
    minor = line_minor[..., None] + torch.arange(-band, band + 2, device=device, dtype=dtype)  # (B, P, 8, L, A)
    major = steps[:, None].expand_as(minor)
    x_major_cells = x_major[..., None, None]
    xs = torch.where(x_major_cells, major, minor)
    ys = torch.where(x_major_cells, minor, major)

    def in_box(cells: torch.Tensor, axis: int) -> torch.Tensor:
        return (cells >= limbs["box_first"][..., axis, None, None]) & (cells < limbs["box_end"][..., axis, None, None])

    distance = torch.abs(
        (xs - start[..., 0, None, None]) * unit[..., 1, None, None]
        - (ys - start[..., 1, None, None]) * unit[..., 0, None, None]
    )
    on_limb = valid[..., None, None] & in_box(xs, 0) & in_box(ys, 1) & (distance <= threshold)
    return xs, ys, on_limb


def _average_limb_vectors(limbs: dict, xs: torch.Tensor, ys: torch.Tensor, on_limb: torch.Tensor,
                          height: int, width: int) -> torch.Tensor:
    """Write each on-limb candidate's unit vector, averaged where several people's same limb
    cover a cell: (B, 16, height, width) float32."""
    unit = limbs["unit"]
    batch, num_people = unit.shape[:2]
    device = unit.device
    # Flat cell index into (B, 8, 2, H, W); off-limb candidates carry weight 0 to some cell.
    sample = torch.arange(batch, device=device).view(batch, 1, 1)
    limb = torch.arange(NUM_LIMBS, device=device).view(1, 1, NUM_LIMBS)
    plane = (sample * NUM_LIMBS + limb).expand(batch, num_people, NUM_LIMBS)[..., None, None]
    plane_size = height * width
    x_index = (plane * 2 * plane_size + ys.clamp(0, height - 1).long() * width + xs.clamp(0, width - 1).long())
    x_index = x_index.reshape(-1)
    weight = on_limb.to(torch.float32).reshape(-1)
    # Averaging without a pass over the whole grid: count the writers of each cell in the
    # output's x plane, read the count back at every candidate, clear those cells, then add
    # each vector divided by its cell's count (c terms v / c sum to the mean).
    fields = torch.zeros(batch, NUM_LIMBS, 2, height, width, device=device, dtype=torch.float32)
    flat_fields = fields.view(-1)
    flat_fields.index_add_(0, x_index, weight)
    share = weight / flat_fields[x_index].clamp(min=1.0)
    flat_fields.index_fill_(0, x_index, 0.0)
    x_values = share * unit[..., 0, None, None].to(torch.float32).expand_as(on_limb).reshape(-1)
    y_values = share * unit[..., 1, None, None].to(torch.float32).expand_as(on_limb).reshape(-1)
    flat_fields.index_add_(0, torch.cat([x_index, x_index + plane_size]), torch.cat([x_values, y_values]))
    return fields.view(batch, NUM_PAF_CHANNELS, height, width)


def nadsnet_targets(
    keypoints: torch.Tensor, image_size: int, background: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """NADS-Net's heatmap and PAF targets at stride 4, on keypoints.device.

    keypoints: (B, P, 9, 2) input pixels of an `image_size` square input, NaN padded.
    Returns heatmaps (B, 9|10, S/4, S/4) with sigma = 7 * S / 384 input pixels, pafs (B, 16, S/4, S/4).
    """
    check_image_size(image_size)
    cells = image_size // OUTPUT_STRIDE
    sigma = HEATMAP_SIGMA * scale_for(image_size)
    heatmaps = render_heatmaps_torch(keypoints, cells, cells, OUTPUT_STRIDE, sigma, background)
    pafs = render_pafs_torch(keypoints, cells, cells, OUTPUT_STRIDE)
    return heatmaps, pafs


# How the generator's input shows occluded joints (v == 1): 'drawn' like visible ones (the seed's),
# or 'omitted': left out, with every limb touching them, so that it is never asked to draw an arm
# at a place where its real frame shows none.
OCCLUDED_JOINTS = ("drawn", "omitted")


def gan_input(keypoints: torch.Tensor, seatbelt: torch.Tensor, image_size: int, occluded: torch.Tensor | None = None,
              occluded_joints: str = "drawn") -> torch.Tensor:
    """The generator's 26-channel input at full resolution, on keypoints.device.

    keypoints: (B, P, 9, 2) input pixels, NaN padded; seatbelt: (B, 1, S, S) in {0, 1}.
    occluded: bool (B, P, 9), True where a joint is labelled occluded (v == 1); needed with
        occluded_joints 'omitted', which leaves those joints out of the heatmaps and the limbs
        touching them out of the PAFs ('drawn': every present joint is drawn, `occluded` unused).
    Returns float32 (B, 26, S, S): 9 heatmaps (no background; sigma = 7 * S / 384), 16 PAFs, seatbelt.
    """
    check_image_size(image_size)
    expected = (keypoints.shape[0], 1, image_size, image_size)
    if tuple(seatbelt.shape) != expected:
        raise ValueError(f"seatbelt must have shape {expected}, got {tuple(seatbelt.shape)}")
    if occluded_joints not in OCCLUDED_JOINTS:
        raise ValueError(f"occluded_joints must be one of {OCCLUDED_JOINTS}, got {occluded_joints!r}")
    if occluded_joints == "omitted":
        if occluded is None or tuple(occluded.shape) != tuple(keypoints.shape[:3]):
            raise ValueError(f"occluded_joints 'omitted' needs the occluded joints, bool {tuple(keypoints.shape[:3])}, "
                             f"got {None if occluded is None else tuple(occluded.shape)}")
        # a missing joint (NaN) draws no heat and ends no limb: the renderers' own rule
        keypoints = keypoints.masked_fill(occluded.to(keypoints.device, torch.bool)[..., None], math.nan)
    sigma = HEATMAP_SIGMA * scale_for(image_size)
    heatmaps = render_heatmaps_torch(keypoints, image_size, image_size, 1, sigma)
    pafs = render_pafs_torch(keypoints, image_size, image_size, 1)
    return torch.cat([heatmaps, pafs, seatbelt.to(device=keypoints.device, dtype=torch.float32)], dim=1)
