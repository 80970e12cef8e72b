"""The camera: its placement, what it sees of each keypoint, and its lighting, optics and noise."""

from __future__ import annotations

import cv2
import numpy as np

from common.posedata.pose import (
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
from common.synthetic.painter import Painter
from common.synthetic.people import Person

# Keypoint -> the person's own parts that may cover it without hiding it; anything else drawn
# over it (the other person, the wheel, the dashboard, a front seat, the person's own arm over a
# hip or shoulder) makes it occluded.
_OWN_PARTS: dict[int, tuple[str, ...]] = {
    RIGHT_WRIST: ("right_forearm", "right_hand"),
    RIGHT_ELBOW: ("right_upper_arm", "right_forearm"),
    RIGHT_SHOULDER: ("torso", "right_upper_arm", "belt"),
    NECK: ("torso", "neck", "belt", "head"),
    LEFT_SHOULDER: ("torso", "left_upper_arm", "belt"),
    LEFT_ELBOW: ("left_upper_arm", "left_forearm"),
    LEFT_WRIST: ("left_forearm", "left_hand"),
    RIGHT_HIP: ("torso", "thighs", "belt"),
    LEFT_HIP: ("torso", "thighs", "belt"),
}


def camera_transform(width: int, height: int, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Scene -> image pixels: (2, 3) affine map (zoom 0.9-1.3 about the frame centre, a roll of
    a few degrees, a shift of a few percent) and the zoom factor."""
    zoom = rng.uniform(0.9, 1.3)
    roll = np.radians(rng.normal(0, 1.5))
    shift = np.array([rng.normal(0, 0.03) * width, rng.normal(0, 0.03) * height])
    center = np.array([width / 2, height / 2])
    rot = zoom * np.array([[np.cos(roll), -np.sin(roll)], [np.sin(roll), np.cos(roll)]])
    return np.concatenate([rot, (center + shift - rot @ center)[:, None]], axis=1), float(zoom)


def keypoint_visibility(p: Painter, people: list[Person]) -> np.ndarray:
    """(P, 9, 3) keypoints in image pixels with v: 2 visible, 1 occluded, 0 outside (x = y = 0).

    A keypoint is visible when at least half of a small disk around it (about 1% of the frame
    height) is owned by the person's own parts listed in _OWN_PARTS."""
    radius = max(2, int(round(0.012 * p.height * p.zoom)))
    oy, ox = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    disk = ox * ox + oy * oy <= radius * radius
    oy, ox = oy[disk], ox[disk]
    person_of = np.array([q for q, _ in p.parts])
    name_of = np.array([n for _, n in p.parts])
    result = np.zeros((len(people), NUM_KEYPOINTS, 3))
    for i, person in enumerate(people):
        pixels = np.round(p.to_pixels(person.keypoints), 1)
        for k in range(NUM_KEYPOINTS):
            x, y = pixels[k]
            if not (0 <= x <= p.width - 1 and 0 <= y <= p.height - 1):
                continue
            xs = np.clip(int(round(x)) + ox, 0, p.width - 1)
            ys = np.clip(int(round(y)) + oy, 0, p.height - 1)
            owners = p.owner[ys, xs]
            own = (person_of[owners] == i) & np.isin(name_of[owners], _OWN_PARTS[k])
            result[i, k] = (x, y, 2 if own.mean() >= 0.5 else 1)
    return result


def finish(image: np.ndarray, rng: np.random.Generator, nir: bool) -> np.ndarray:
    """Lighting, optics and sensor: float BGR (H, W, 3) -> uint8 BGR (H, W, 3) or grey (H, W)."""
    h, w = image.shape[:2]
    ys = (np.arange(h, dtype=np.float32)[:, None] - h / 2) / np.float32(h / 2)
    xs = (np.arange(w, dtype=np.float32)[None, :] - w / 2) / np.float32(w / 2)
    r2 = xs * xs * np.float32(0.6) + ys * ys * np.float32(0.4)
    vignette = np.maximum(1 - np.float32(rng.uniform(0.15, 0.55 if nir else 0.4)) * r2, np.float32(0.2))
    gradient = 1 + np.float32(rng.uniform(-0.3, 0.3)) * xs + np.float32(rng.uniform(-0.2, 0.15)) * ys
    light = vignette * np.maximum(gradient, np.float32(0.3)) * np.float32(rng.uniform(0.7, 1.25))
    if rng.random() < 0.3:  # a soft patch of sunlight
        cx, cy = rng.uniform(-0.8, 0.8), rng.uniform(-0.6, 0.6)
        sx, sy = rng.uniform(0.2, 0.5), rng.uniform(0.2, 0.5)
        d = ((xs - np.float32(cx)) / np.float32(sx)) ** 2 + ((ys - np.float32(cy)) / np.float32(sy)) ** 2
        light = light * (1 + np.float32(rng.uniform(0.2, 0.5)) * np.maximum(1 - d, 0) ** 2)
    if nir:
        weights = rng.dirichlet([4.0, 4.0, 4.0]).astype(np.float32)
        lit = (image @ weights) * light * np.float32(rng.uniform(0.9, 1.2))
        lit = lit + np.float32(rng.uniform(0.1, 0.3)) * lit * (1 - lit * np.float32(1 / 255))  # lift mid-tones
    else:
        balance = rng.uniform(0.9, 1.1, 3).astype(np.float32)
        lit = image * light[..., None] * balance
    # Sensor noise (one value per pixel for all channels, like luma noise), then the lens and the
    # camera's processing smooth it a little, as in real video frames.
    sigma = rng.uniform(2.0, 4.0) if nir else rng.uniform(1.2, 3.0)
    noise = rng.normal(0, sigma, lit.shape[:2]).astype(np.float32)
    noisy = lit + (noise[..., None] if lit.ndim == 3 else noise)
    out = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    return cv2.GaussianBlur(out, (0, 0), rng.uniform(0.6, 1.0))
