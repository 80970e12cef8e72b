"""Augmentations: arm poses of the front-row people and random resize-and-place of whole
training samples.

`arm_augment` works on one sample's keypoints (numpy, in the data loader) and never changes
its input. `geometric_augment` works on a batch of images and label maps (torch, on the
batch's device) with random choices drawn from a CPU torch.Generator, so a run is reproducible
whatever the device.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from common.posedata.pose import (
    ARMS,
    FRONT_ROW_TORSO_HEIGHT,
    HIPS,
    LEFT_HIP,
    LEFT_SHOULDER,
    NECK,
    NUM_KEYPOINTS,
    RIGHT_HIP,
    RIGHT_SHOULDER,
    scale_for,
)

ARM_AUGMENT_MODES = ("none", "slightly", "highly", "plausible", "library")

UPPER_ARM_PER_TORSO = 0.77  # upper arm length L = 0.77 * torso height
FOREARM_PER_UPPER_ARM = 0.9  # forearm length F = 0.9 * L
SLIGHT_OFFSET = 0.1  # 'slightly': offsets uniform in [-0.1, 0.1] * segment length, per axis
HIGH_LENGTH_MEAN, HIGH_LENGTH_STD = 0.7, 0.2  # 'highly': segment length ~ N(0.7, 0.2) * nominal ...
HIGH_LENGTH_MIN, HIGH_LENGTH_MAX = 0.1, 1.0  # ... clipped to [0.1, 1] * nominal

# 'plausible': lengths of the synthetic renderer's arms (the longest projected upper arm and
# forearm per torso height; shorter = pointing towards the camera), joint angles within human
# limits, in a frame whose pixels are square again (the input stretches the frame to S x S).
PLAUSIBLE_UPPER_ARM_PER_TORSO = 0.62
PLAUSIBLE_FOREARM_PER_TORSO = 0.58
PLAUSIBLE_SHORTEST = 0.55  # a segment's projected length: uniform in [0.55, 1] x its longest
# Upper arm: degrees from hanging straight down, positive away from the body, negative across it.
PLAUSIBLE_SHOULDER_DEGREES = (-40.0, 170.0)
PLAUSIBLE_ELBOW_FLEXION_DEGREES = (0.0, 145.0)  # the forearm's turn from the upper arm, either way
# The head: a disk of this radius (per torso height) centred this far above the neck.
PLAUSIBLE_HEAD_ABOVE_NECK, PLAUSIBLE_HEAD_RADIUS = 0.33, 0.25
PLAUSIBLE_TRIES = 50  # draws per arm before the arm is left as it was
LIBRARY_TRIES = 50  # 'library': the same
ARM_AWAY = (-1.0, 1.0)  # per arm of ARMS: the x direction away from the body (the right arm is on the image's left)

SCALE_TENTHS = tuple(range(3, 11))  # scales 0.3, 0.4, ..., 1.0, in tenths for exact arithmetic
# The canvas around a shrunk image is this grey pixel value, as in the seed; callers normalise it
# like any pixel, e.g. common.posedata.imaging.imagenet_value_of(CANVAS_GREY_PIXEL), for `image_fill`.
CANVAS_GREY_PIXEL = 128


def _present(point: np.ndarray) -> bool:
    return bool(np.isfinite(point).all())


def torso_height(person: np.ndarray) -> float | None:
    """Mean neck-hip distance over the present hips, in input pixels; None without neck or hips.

    person: (9, 2) keypoints, NaN = missing.
    """
    if not _present(person[NECK]):
        return None
    distances = [float(np.hypot(*(person[hip] - person[NECK]))) for hip in HIPS if _present(person[hip])]
    return sum(distances) / len(distances) if distances else None


def _random_length(nominal: float, rng: np.random.Generator) -> float:
    length = np.clip(rng.normal(HIGH_LENGTH_MEAN * nominal, HIGH_LENGTH_STD * nominal),
                     HIGH_LENGTH_MIN * nominal, HIGH_LENGTH_MAX * nominal)
    return abs(float(length))


def _random_direction(rng: np.random.Generator) -> np.ndarray:
    angle = rng.uniform(0.0, 2.0 * math.pi)
    return np.array([math.cos(angle), math.sin(angle)])


def arm_augment(keypoints: np.ndarray, mode: str, rng: np.random.Generator, image_size: int = 384,
                pixel_aspect: float = 1.0, library: np.ndarray | None = None) -> np.ndarray:
    """Move the arms of the front-row people; returns a new array, the input is untouched.

    keypoints: (P, 9, 2) (x, y) input pixels of an `image_size` square input, NaN = missing.
    mode: 'none' (a copy), 'slightly' (present elbows and wrists jitter by whole pixels, up to
    10 % of the upper arm / forearm per axis, not clipped), 'highly' (for each present
    shoulder, a new elbow and wrist in random directions at random lengths, rounded and
    clipped to [0, image_size]; missing elbows and wrists become present) or 'plausible' (for
    each present shoulder, an arm a person could hold: the upper arm 40 degrees across the body
    to 170 degrees out and up from hanging down, the elbow bent 0-145 degrees either way,
    segments 0.55-1 x the renderer's longest (0.62 and 0.58 torso heights), measured with square
    pixels (`pixel_aspect`); the elbow and hand inside the frame and out of the head, the hand
    out of the torso; after 50 draws without such an arm, the arm stays as it was) or 'library'
    (for each present shoulder, the elbow and wrist of an arm drawn at random from `library`,
    scaled to this person's torso height in square pixels; the elbow and hand inside the frame,
    else another draw, after 50 the arm stays as it was).
    The seed's 'slightly' and 'highly' are kept exactly as it computed them.
    Only people whose torso height exceeds 70 px (at 384 input, scaled) are changed; people
    without a neck or without both hips are left alone.
    rng: the source of every random draw (seed it per sample for reproducible epochs).
    library: for 'library': (N, 2, 2) arms as `arm_offsets` gives them (common.posedata.pose_library
        reads them from an annotation file).
    pixel_aspect: the source frame's width / height (the input stretches it to a square), so
        that 'plausible' angles and lengths are those of the frame; the other modes ignore it.
    """
    if mode not in ARM_AUGMENT_MODES:
        raise ValueError(f"arm augment mode must be one of {ARM_AUGMENT_MODES}, got {mode!r}")
    keypoints = np.asarray(keypoints)
    if keypoints.size and (keypoints.ndim != 3 or keypoints.shape[1:] != (NUM_KEYPOINTS, 2)):
        raise ValueError(f"keypoints must have shape (P, {NUM_KEYPOINTS}, 2), got {keypoints.shape}")
    dtype = keypoints.dtype if np.issubdtype(keypoints.dtype, np.floating) else np.float64
    augmented = keypoints.astype(dtype, copy=True)
    if mode == "none":
        return augmented
    if mode == "library" and (library is None or not len(library)):
        raise ValueError("arm augment mode 'library' needs a non-empty library of arm poses")
    front_row_height = FRONT_ROW_TORSO_HEIGHT * scale_for(image_size)
    for person in augmented:  # rows are views: changes land in `augmented`
        torso = torso_height(person)
        if torso is not None and torso > front_row_height:
            if mode == "plausible":
                _plausible_arms(person, rng, image_size, pixel_aspect)
            elif mode == "library":
                _library_arms(person, rng, image_size, pixel_aspect, library)
            else:
                _move_arms(person, mode, torso, rng, image_size)
    return augmented


def _move_arms(person: np.ndarray, mode: str, torso: float, rng: np.random.Generator, image_size: int) -> None:
    """Change one front-row person's (9, 2) elbows and wrists in place (see `arm_augment`)."""
    upper_arm = UPPER_ARM_PER_TORSO * torso
    forearm = FOREARM_PER_UPPER_ARM * upper_arm
    for shoulder, elbow, wrist in ARMS:
        if mode == "slightly":
            for joint, length in ((elbow, upper_arm), (wrist, forearm)):
                if _present(person[joint]):
                    offset = rng.uniform(-SLIGHT_OFFSET * length, SLIGHT_OFFSET * length, size=2)
                    person[joint] = person[joint] + np.round(offset)
        elif _present(person[shoulder]):
            new_elbow = person[shoulder] + _random_direction(rng) * _random_length(upper_arm, rng)
            new_elbow = np.clip(np.round(new_elbow), 0, image_size)
            new_wrist = new_elbow + _random_direction(rng) * _random_length(forearm, rng)
            person[elbow] = new_elbow
            person[wrist] = np.clip(np.round(new_wrist), 0, image_size)


def _inside_polygon(point: np.ndarray, corners: np.ndarray) -> bool:
    """Whether `point` (2,) lies inside the convex polygon `corners` (K, 2), either winding."""
    edges = np.roll(corners, -1, axis=0) - corners
    cross = edges[:, 0] * (point[1] - corners[:, 1]) - edges[:, 1] * (point[0] - corners[:, 0])
    return bool((cross > 0).all() or (cross < 0).all())


def _plausible_arms(person: np.ndarray, rng: np.random.Generator, image_size: int, pixel_aspect: float) -> None:
    """Give one front-row person's (9, 2) arms new 'plausible' elbows and wrists, in place."""
    square = np.array([pixel_aspect, 1.0])  # input pixels -> pixels as square as the frame's
    points = person * square
    torso = torso_height(points)
    body = points[[RIGHT_SHOULDER, LEFT_SHOULDER, LEFT_HIP, RIGHT_HIP]]
    head = points[NECK] + np.array([0.0, -PLAUSIBLE_HEAD_ABOVE_NECK * torso])
    low, high = np.zeros(2), np.array([image_size * pixel_aspect, image_size])
    has_body = bool(np.isfinite(body).all())
    for (shoulder, elbow, wrist), away in zip(ARMS, ARM_AWAY):
        if not _present(points[shoulder]):
            continue
        for _ in range(PLAUSIBLE_TRIES):
            angle = math.radians(rng.uniform(*PLAUSIBLE_SHOULDER_DEGREES))
            upper = np.array([away * math.sin(angle), math.cos(angle)])
            bend = math.radians(rng.uniform(*PLAUSIBLE_ELBOW_FLEXION_DEGREES)) * rng.choice((-1.0, 1.0))
            fore = np.array([upper[0] * math.cos(bend) - upper[1] * math.sin(bend),
                             upper[0] * math.sin(bend) + upper[1] * math.cos(bend)])
            new_elbow = points[shoulder] + upper * torso * PLAUSIBLE_UPPER_ARM_PER_TORSO * rng.uniform(PLAUSIBLE_SHORTEST, 1.0)
            new_wrist = new_elbow + fore * torso * PLAUSIBLE_FOREARM_PER_TORSO * rng.uniform(PLAUSIBLE_SHORTEST, 1.0)
            in_frame = all(((joint >= low) & (joint < high)).all() for joint in (new_elbow, new_wrist))
            off_head = all(np.hypot(*(joint - head)) > PLAUSIBLE_HEAD_RADIUS * torso for joint in (new_elbow, new_wrist))
            off_torso = not (has_body and _inside_polygon(new_wrist, body))
            if in_frame and off_head and off_torso:
                person[elbow], person[wrist] = new_elbow / square, new_wrist / square
                break


def arm_offsets(points: np.ndarray) -> list[np.ndarray]:
    """A person's (9, 2) keypoints in square pixels -> per arm with shoulder, elbow and wrist
    present, (2, 2) [elbow, wrist] offsets from the shoulder in torso heights, x mirrored so
    that + points away from the body; [] without a torso height."""
    torso = torso_height(points)
    if not torso:
        return []
    return [(points[[elbow, wrist]] - points[shoulder]) / torso * [away, 1.0]
            for (shoulder, elbow, wrist), away in zip(ARMS, ARM_AWAY)
            if np.isfinite(points[[shoulder, elbow, wrist]]).all()]


def _library_arms(person: np.ndarray, rng: np.random.Generator, image_size: int, pixel_aspect: float,
                  library: np.ndarray) -> None:
    """Give one front-row person's (9, 2) arms elbows and wrists drawn from `library`, in place."""
    square = np.array([pixel_aspect, 1.0])
    points = person * square
    torso = torso_height(points)
    high = np.array([image_size * pixel_aspect, image_size])
    for (shoulder, elbow, wrist), away in zip(ARMS, ARM_AWAY):
        if not _present(points[shoulder]):
            continue
        for _ in range(LIBRARY_TRIES):
            joints = points[shoulder] + library[rng.integers(len(library))] * torso * [away, 1.0]
            if ((joints >= 0) & (joints < high)).all():
                person[elbow], person[wrist] = joints / square
                break


def _check_batch(images, seatbelt, heatmaps, pafs) -> tuple[int, int]:
    """Validate shapes; return (image size S, map size S / stride)."""
    if images.dim() != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3]:
        raise ValueError(f"images must have shape (B, 3, S, S), got {tuple(images.shape)}")
    batch, _, size, _ = images.shape
    if tuple(seatbelt.shape) != (batch, 1, size, size):
        raise ValueError(f"seatbelt must have shape {(batch, 1, size, size)}, got {tuple(seatbelt.shape)}")
    if heatmaps.dim() != 4 or heatmaps.shape[0] != batch or heatmaps.shape[2] != heatmaps.shape[3] or (
        size % heatmaps.shape[3]
    ):
        raise ValueError(f"heatmaps must have shape (B, C, S/k, S/k) with B = {batch}, got {tuple(heatmaps.shape)}")
    if pafs.dim() != 4 or pafs.shape[0] != batch or pafs.shape[2:] != heatmaps.shape[2:]:
        raise ValueError(f"pafs must have shape (B, 16) + {tuple(heatmaps.shape[2:])}, got {tuple(pafs.shape)}")
    return size, heatmaps.shape[3]


def scaled_size(tenths: int, size: int) -> int:
    """round(tenths / 10 * size): the side of a sample shrunk by a scale of `tenths` / 10."""
    # tenths * size / 10 is never a half for even sizes, so the rounding rule does not matter.
    return round(tenths * size / 10)


def map_placement(offset: int, tenths: int, size: int, map_size: int) -> tuple[int, int]:
    """(map offset, map side) along one axis for an image pasted at `offset` input pixels.

    The map offset is the seed's half-to-even round(offset / stride), lowered where needed so
    the shrunk map always fits its `map_size` canvas. With half-to-even rounding and
    sizes that are multiples of 32 the lowering never triggers (checked up to 2048); with
    half-up rounding, or other sizes, it can.
    """
    map_side = scaled_size(tenths, map_size)
    return min(round(offset / (size // map_size)), map_size - map_side), map_side


def _resize(tensor: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(C, h, w) -> (C, height, width), bicubic; unchanged when the size already matches."""
    if tensor.shape[-2:] == (height, width):
        return tensor
    return F.interpolate(tensor[None], size=(height, width), mode="bicubic", align_corners=False)[0]


def geometric_augment(
    images: torch.Tensor,
    seatbelt: torch.Tensor,
    heatmaps: torch.Tensor,
    pafs: torch.Tensor,
    generator: torch.Generator,
    image_fill: torch.Tensor,
    first_sample: int = 0,
    global_batch: int | None = None,
    smallest_tenths: int = SCALE_TENTHS[0],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Shrink every sample by a random factor per axis and place it at a random spot.

    images: (B, 3, S, S) normalised; seatbelt: (B, 1, S, S) in {0, 1};
    heatmaps: (B, C, S/4, S/4) (C = 9, or 10 with the background channel last);
    pafs: (B, 16, S/4, S/4). generator: CPU torch.Generator drawing, per sample, scale_h and
    scale_w from {0.3, ..., 1.0} and the offset. image_fill: (3,) the canvas colour in the
    images' normalisation (imagenet_value_of(CANVAS_GREY_PIXEL) for NADS-Net).
    smallest_tenths: the smallest scale, in tenths (3 = 0.3, the seed's); scales are drawn from
    smallest_tenths / 10 .. 1.0 in steps of 0.1.
    first_sample, global_batch: these B samples are samples first_sample .. first_sample + B - 1
    of a global batch of `global_batch` (one process's share in a distributed job): the draws
    of the whole global batch are made, in one process's order, and this share's are used.
    Returns new tensors of the same shapes on the inputs' device. Images and maps are resized
    bicubically; the seatbelt is thresholded at 0.5 afterwards so it stays binary. Around the
    pasted sample the canvas is `image_fill`, zero for the seatbelt and the maps, except a
    background heatmap channel, which is 1 there (no keypoint nearby).
    """
    size, map_size = _check_batch(images, seatbelt, heatmaps, pafs)
    batch, device = images.shape[0], images.device
    with_background = heatmaps.shape[1] == NUM_KEYPOINTS + 1

    fill = image_fill.to(device=device, dtype=images.dtype).view(1, 3, 1, 1)
    out_images = fill.expand_as(images).clone()
    out_seatbelt = torch.zeros_like(seatbelt)
    out_heatmaps = torch.zeros_like(heatmaps)
    if with_background:
        out_heatmaps[:, NUM_KEYPOINTS] = 1.0
    out_pafs = torch.zeros_like(pafs)
    num_heatmaps = heatmaps.shape[1]

    # All random choices come from the CPU generator, so no value travels back from the device.
    global_batch = batch if global_batch is None else global_batch
    scales = tuple(range(smallest_tenths, SCALE_TENTHS[-1] + 1))
    choices = torch.randint(len(scales), (global_batch, 2), generator=generator).tolist()
    for index, (choice_h, choice_w) in enumerate(choices):
        tenths_h, tenths_w = scales[choice_h], scales[choice_w]
        new_h, new_w = scaled_size(tenths_h, size), scaled_size(tenths_w, size)
        dy = int(torch.randint(0, size - new_h + 1, (1,), generator=generator))
        dx = int(torch.randint(0, size - new_w + 1, (1,), generator=generator))
        sample = index - first_sample
        if not 0 <= sample < batch:
            continue  # another process's sample
        map_dy, map_h = map_placement(dy, tenths_h, size, map_size)
        map_dx, map_w = map_placement(dx, tenths_w, size, map_size)

        pixels = _resize(torch.cat([images[sample], seatbelt[sample].to(images.dtype)]), new_h, new_w)
        out_images[sample, :, dy : dy + new_h, dx : dx + new_w] = pixels[:3]
        out_seatbelt[sample, :, dy : dy + new_h, dx : dx + new_w] = (pixels[3:] > 0.5).to(seatbelt.dtype)
        maps = _resize(torch.cat([heatmaps[sample], pafs[sample].to(heatmaps.dtype)]), map_h, map_w)
        out_heatmaps[sample, :, map_dy : map_dy + map_h, map_dx : map_dx + map_w] = maps[:num_heatmaps]
        out_pafs[sample, :, map_dy : map_dy + map_h, map_dx : map_dx + map_w] = maps[num_heatmaps:]
    return out_images, out_seatbelt, out_heatmaps, out_pafs
