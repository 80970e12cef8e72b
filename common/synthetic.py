"""Procedural in-vehicle camera frames in the seed's data layout and annotation format.

The seed's data set is proprietary; this module draws stand-in frames so that every part of
the project (data loading, label maps, both trainings, evaluation) can run end to end and
learn something real. The camera sits on the dashboard and looks back at the front row, so a
person's right side appears on the image's left.

    python -m common.synthetic --out DIR --train N --valid M --seed S [--width W --height H]

writes (SPEC 1):
    DIR/Raw_Images/<image_id>.png        colour (BGR) or grey (3 equal channels or 1 channel)
    DIR/Seatbelt_Mask/<image_id>.png     3 equal channels, 255 on visible belt pixels, 0 elsewhere
    DIR/Train_keypoint_Annotation_sample.json
    DIR/Valid_keypoint_Annotation_sample.json
with image ids "train/frame_000012" and "valid/frame_000003". Each JSON holds
{"annotations": [{"image_id": ..., "label": "Person", "keypoints": [x, y, v] * 9}, ...]},
one annotation per person, x and y in source pixels; v = 2 visible, 1 occluded (by the other
person, the wheel, the dashboard, a seat or the person's own arm), 0 outside the frame with
x = y = 0. Some frames also carry a "Steering_Wheel" annotation (27 zeros) that loaders must
skip.

Every frame draws its randomness from np.random.default_rng([seed, split_index, frame_index]),
so a frame does not depend on how many frames are written: the first K frames of a run with
N > K frames are the frames of a run with K frames. Pixels are composed with elementwise float
arithmetic, OpenCV's fixed-point drawing and its bit-exact 8-bit filters only, so that other
machines compute the same pixels (the PNG bytes also depend on the zlib build).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np

from common.pose import (
    ARMS,
    FRONT_ROW_TORSO_HEIGHT,
    HIPS,
    LEFT_ELBOW,
    LEFT_HIP,
    LEFT_SHOULDER,
    LEFT_WRIST,
    NECK,
    NUM_KEYPOINTS,
    REFERENCE_IMAGE_SIZE,
    RIGHT_ELBOW,
    RIGHT_HIP,
    RIGHT_SHOULDER,
    RIGHT_WRIST,
)

RAW_IMAGES_DIR = "Raw_Images"
SEATBELT_MASK_DIR = "Seatbelt_Mask"
SPLITS: tuple[tuple[str, str], ...] = (
    ("train", "Train_keypoint_Annotation_sample.json"),
    ("valid", "Valid_keypoint_Annotation_sample.json"),
)
DEFAULT_WIDTH = 640
DEFAULT_HEIGHT = 360
# Run-length matching: within ~5% of level 9 in size at 1/50 of its encoding time.
PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 9, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]

# Back-row torsos stay this far below the front-row threshold at the 384 px input.
BACK_ROW_MAX_TORSO_384 = 0.92 * FRONT_ROW_TORSO_HEIGHT

_SHIFT_BITS = 4  # sub-pixel precision of OpenCV drawing: 1/16 px
_FIXED = float(1 << _SHIFT_BITS)

Point = np.ndarray  # (2,) float64 (x, y)
Shade = Callable[[np.ndarray, np.ndarray], np.ndarray]


# --------------------------------------------------------------------------------------------
# Painting: colour image plus a map of which part owns each pixel (for occlusion flags)
# --------------------------------------------------------------------------------------------


class Painter:
    """Paints anti-aliased shapes, back to front, on a float BGR image (H, W, 3) in [0, 255].

    Shapes are given in scene coordinates (nominal frame pixels before the camera's zoom, roll
    and shift); `camera` (2, 3) maps them to image pixels and `zoom` scales lengths. Alongside
    the image, `owner` (H, W) int32 records the part that covers each pixel last (0 = the car),
    which decides keypoint visibility and the seatbelt mask.
    """

    def __init__(self, width: int, height: int, camera: np.ndarray, zoom: float):
        self.width, self.height = width, height
        self.camera, self.zoom = camera, zoom
        self.image = np.zeros((height, width, 3), np.float32)
        self.owner = np.zeros((height, width), np.int32)
        self.parts: list[tuple[int, str]] = [(-1, "car")]  # part id -> (person index, part name)
        self._coverage = np.zeros((height, width), np.uint8)

    # ---- coordinates
    def to_pixels(self, points: np.ndarray) -> np.ndarray:
        """Scene (..., 2) -> image pixels (..., 2)."""
        points = np.asarray(points, np.float64)
        return points @ self.camera[:, :2].T + self.camera[:, 2]

    def _fixed(self, points: np.ndarray) -> np.ndarray:
        return np.round(self.to_pixels(points) * _FIXED).astype(np.int32)

    def _thickness(self, scene_length: float) -> int:
        return max(1, int(round(scene_length * self.zoom)))

    def new_part(self, person: int, name: str) -> int:
        self.parts.append((person, name))
        return len(self.parts) - 1

    # ---- shapes
    def polygon(self, points, colour, part: int = 0, shade: Shade | None = None) -> None:
        cv2.fillPoly(self._coverage, [self._fixed(points)], 255, cv2.LINE_AA, _SHIFT_BITS)
        self._composite(colour, part, shade)

    def line(self, start, end, width: float, colour, part: int = 0, shade: Shade | None = None) -> None:
        """A band of `width` scene pixels with round caps."""
        self.polyline([start, end], width, colour, part, shade)

    def polyline(self, points, width: float, colour, part: int = 0, shade: Shade | None = None) -> None:
        fixed = self._fixed(points)
        thickness = self._thickness(width)
        for a, b in zip(fixed[:-1], fixed[1:]):
            cv2.line(self._coverage, tuple(int(v) for v in a), tuple(int(v) for v in b), 255, thickness,
                     cv2.LINE_AA, _SHIFT_BITS)
        self._composite(colour, part, shade)

    def ellipse(self, center, axes, angle_deg: float, colour, part: int = 0, shade: Shade | None = None,
                arc: tuple[float, float] = (0.0, 360.0), width: float | None = None) -> None:
        """Filled ellipse (or, with `width`, an outline of that width); axes are semi-axes."""
        c = self._fixed(np.asarray(center, np.float64)[None])[0]
        ax = np.round(np.asarray(axes, np.float64) * self.zoom * _FIXED).astype(np.int32)
        roll = np.degrees(np.arctan2(self.camera[1, 0], self.camera[0, 0]))
        thickness = -1 if width is None else self._thickness(width)
        cv2.ellipse(self._coverage, (int(c[0]), int(c[1])), (max(int(ax[0]), 1), max(int(ax[1]), 1)),
                    float(angle_deg + roll), float(arc[0]), float(arc[1]), 255, thickness, cv2.LINE_AA,
                    _SHIFT_BITS)
        self._composite(colour, part, shade)

    def _composite(self, colour, part: int, shade: Shade | None) -> None:
        x0, y0, w, h = cv2.boundingRect(self._coverage)
        if w == 0 or h == 0:
            return
        window = (slice(y0, y0 + h), slice(x0, x0 + w))
        coverage = self._coverage[window]
        if isinstance(colour, np.ndarray) and colour.ndim == 3:  # a full-frame texture
            paint = colour[window]
        else:
            paint = np.broadcast_to(np.asarray(colour, np.float32), (h, w, 3))
        if shade is not None:
            ys, xs = np.mgrid[y0:y0 + h, x0:x0 + w].astype(np.float32)
            paint = paint * shade(xs, ys)[..., None]
        alpha = coverage.astype(np.float32)[..., None] * np.float32(1.0 / 255.0)
        region = self.image[window]
        region += (paint - region) * alpha
        self.owner[window][coverage >= 128] = part
        coverage[:] = 0

    # ---- shading fields, in image pixels (elementwise arithmetic only)
    def shade_linear(self, origin, direction, strength: float, floor: float = 0.35) -> Shade:
        """1 + strength * (distance along `direction` from `origin`) / |direction| (scene units)."""
        o = self.to_pixels(np.asarray(origin, np.float64)[None])[0]
        d = self.to_pixels(np.asarray(origin, np.float64)[None] + np.asarray(direction, np.float64))[0] - o
        d = d / max(float(d @ d), 1e-9)

        def shade(xs, ys):
            t = (xs - np.float32(o[0])) * np.float32(d[0]) + (ys - np.float32(o[1])) * np.float32(d[1])
            return np.maximum(1.0 + np.float32(strength) * t, np.float32(floor))

        return shade

    def shade_cylinder(self, start, end, radius: float, strength: float = 0.35, light: float = 0.3) -> Shade:
        """Round limb look: darker towards both edges of the band start->end, lit off-axis."""
        p = self.to_pixels(np.stack([np.asarray(start, np.float64), np.asarray(end, np.float64)]))
        axis = p[1] - p[0]
        axis = axis / max(np.hypot(*axis), 1e-9)
        r = max(radius * self.zoom, 1e-3)

        def shade(xs, ys):
            across = ((xs - np.float32(p[0, 0])) * np.float32(axis[1])
                      - (ys - np.float32(p[0, 1])) * np.float32(axis[0])) * np.float32(1.0 / r)
            across = np.clip(across - np.float32(light), -1.5, 1.5)
            return np.maximum(1.0 - np.float32(strength) * across * across, np.float32(0.3))

        return shade

    def shade_dome(self, center, axes, strength: float = 0.3, light=(-0.25, -0.3)) -> Shade:
        """Rounded-body look for ellipses: brightest near `center + light * axes`."""
        c = self.to_pixels(np.asarray(center, np.float64)[None])[0]
        inv = 1.0 / np.maximum(np.asarray(axes, np.float64) * self.zoom, 1e-3)
        lx, ly = light

        def shade(xs, ys):
            u = (xs - np.float32(c[0])) * np.float32(inv[0]) - np.float32(lx)
            v = (ys - np.float32(c[1])) * np.float32(inv[1]) - np.float32(ly)
            return np.maximum(1.0 - np.float32(strength) * (u * u + v * v), np.float32(0.3))

        return shade


# --------------------------------------------------------------------------------------------
# Colours
# --------------------------------------------------------------------------------------------


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    """BGR float (3,) from hue in [0, 180), saturation and value in [0, 255] (OpenCV's HSV)."""
    pixel = np.array([[[h, s, v]]], np.float64).clip(0, [179, 255, 255]).astype(np.uint8)
    return cv2.cvtColor(pixel, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32)


_SKIN_TONES = np.array([[178, 196, 236], [140, 170, 215], [105, 140, 190], [75, 105, 150], [50, 72, 105]],
                       np.float32)  # BGR, light to dark
_HAIR_COLOURS = np.array([[22, 22, 25], [30, 45, 70], [45, 75, 115], [110, 160, 200], [150, 150, 150],
                          [40, 60, 140]], np.float32)


def _skin(rng: np.random.Generator) -> np.ndarray:
    t = rng.uniform(0, len(_SKIN_TONES) - 1)
    i = min(int(t), len(_SKIN_TONES) - 2)
    tone = _SKIN_TONES[i] + (t - i) * (_SKIN_TONES[i + 1] - _SKIN_TONES[i])
    return tone * rng.uniform(0.93, 1.07, 3).astype(np.float32)


def _clothing(rng: np.random.Generator) -> np.ndarray:
    if rng.random() < 0.35:  # greys, black, white
        return np.full(3, rng.uniform(25, 225), np.float32) * rng.uniform(0.95, 1.05, 3).astype(np.float32)
    return _hsv(rng.uniform(0, 180), rng.uniform(60, 230), rng.uniform(50, 230))


def _vary(colour: np.ndarray, rng: np.random.Generator, amount: float = 0.1) -> np.ndarray:
    return np.clip(colour * rng.uniform(1 - amount, 1 + amount, 3).astype(np.float32), 0, 255)


# --------------------------------------------------------------------------------------------
# Scene description
# --------------------------------------------------------------------------------------------


@dataclass
class Person:
    """One occupant. `keypoints` (9, 2) in scene coordinates, in common.pose order."""

    row: str  # "front" or "back"
    keypoints: np.ndarray
    torso: float  # neck-to-hip height in scene pixels
    head_center: np.ndarray
    head_axes: np.ndarray
    arm_poses: tuple[str, str]  # (right arm, left arm)
    belted: bool
    outboard: int  # +1: the person's left side faces the door (image right), -1: the right side
    # Appearance: BGR colours (3,) float32 in [0, 255] and style choices.
    skin: np.ndarray
    top: np.ndarray
    long_sleeves: bool  # else the forearms show skin
    pants: np.ndarray
    hair: np.ndarray
    hair_style: str  # "short", "long", "bald" or "cap"
    belt_colour: np.ndarray
    face_yaw: float  # face features' sideways offset, in head half-widths
    neckline: str  # "round", "v" or "collar"

    @property
    def sleeves(self) -> np.ndarray:
        return self.top if self.long_sleeves else self.skin


def torso_height_384(keypoints: np.ndarray, width: int, height: int) -> float:
    """Mean neck-hip distance (SPEC 5) after stretching a width x height frame to 384 x 384.

    keypoints: (9, 2+) source pixels; every hip counts (visibility is not looked at)."""
    scale = np.array([REFERENCE_IMAGE_SIZE / width, REFERENCE_IMAGE_SIZE / height])
    points = np.asarray(keypoints, np.float64)[:, :2] * scale
    return float(np.mean([np.hypot(*(points[h] - points[NECK])) for h in HIPS]))


def _clamp_length(origin: Point, target: Point, max_length: float) -> Point:
    offset = target - origin
    length = float(np.hypot(*offset))
    return target if length <= max_length else origin + offset * (max_length / length)


def _arm_targets(pose: str, side: int, person_kp: np.ndarray, torso: float, head_center: Point,
                 head_axes: np.ndarray, wheel: dict | None, center_x: float, rng: np.random.Generator
                 ) -> tuple[Point, Point]:
    """Elbow and wrist (scene coords) for one arm. side -1 = the person's right arm (image left)."""
    shoulder = person_kp[RIGHT_SHOULDER if side < 0 else LEFT_SHOULDER]
    hip = person_kp[RIGHT_HIP if side < 0 else LEFT_HIP]
    other_shoulder = person_kp[LEFT_SHOULDER if side < 0 else RIGHT_SHOULDER]
    t = torso

    def jitter(scale: float = 0.05) -> np.ndarray:
        return rng.normal(0, scale * t, 2)

    if pose == "wheel" and wheel is not None:
        angle = np.radians(rng.uniform(15, 75))
        on_rim = wheel["center"] + np.array([side * wheel["axes"][0] * np.cos(angle),
                                             -wheel["axes"][1] * np.sin(angle)])
        wrist = on_rim + np.array([0.0, rng.uniform(-0.03, 0.05) * t])
        elbow = shoulder + np.array([side * rng.uniform(0.12, 0.3), rng.uniform(0.4, 0.55)]) * t
    elif pose in ("lap", "wheel"):
        elbow = shoulder + np.array([side * rng.uniform(0.04, 0.2), rng.uniform(0.45, 0.58)]) * t
        wrist = hip + np.array([-side * rng.uniform(0.0, 0.22), rng.uniform(-0.12, 0.05)]) * t
    elif pose == "raised":
        elbow = shoulder + np.array([side * rng.uniform(0.2, 0.45), rng.uniform(-0.15, 0.15)]) * t
        wrist = elbow + np.array([side * rng.uniform(-0.15, 0.15), -rng.uniform(0.35, 0.55)]) * t
    elif pose == "phone":
        elbow = shoulder + np.array([side * rng.uniform(-0.05, 0.12), rng.uniform(0.32, 0.48)]) * t
        wrist = head_center + np.array([side * head_axes[0] * rng.uniform(0.85, 1.1),
                                        head_axes[1] * rng.uniform(0.0, 0.35)])
    elif pose == "cross":
        elbow = shoulder + np.array([side * rng.uniform(-0.05, 0.1), rng.uniform(0.38, 0.52)]) * t
        wrist = other_shoulder + np.array([side * rng.uniform(0.0, 0.12), rng.uniform(0.05, 0.35)]) * t
    elif pose == "reach":  # towards the centre console / the other seat, in front of the body
        elbow = shoulder + np.array([-side * rng.uniform(0.0, 0.15), rng.uniform(0.4, 0.55)]) * t
        wrist = np.array([center_x + rng.normal(0, 0.08 * t), shoulder[1] + rng.uniform(0.45, 0.8) * t])
    else:  # "window": the door-side arm rests on the door, the elbow out towards the window
        elbow = shoulder + np.array([side * rng.uniform(0.35, 0.6), rng.uniform(0.2, 0.45)]) * t
        wrist = elbow + np.array([-side * rng.uniform(0.0, 0.2), rng.uniform(-0.45, 0.3)]) * t
    upper, fore = 0.62 * t, 0.58 * t  # longest projected lengths; shorter = towards the camera
    elbow = _clamp_length(shoulder, elbow + jitter(0.03), upper)
    wrist = _clamp_length(elbow, wrist + jitter(0.03), fore)
    return elbow, wrist


def _make_person(row: str, center_x: float, neck_y: float, torso: float, outboard: int, is_driver: bool,
                 wheel: dict | None, frame_center_x: float, rng: np.random.Generator) -> Person:
    t = torso
    lean = np.radians(rng.normal(0, 4))
    half_shoulders = rng.uniform(0.36, 0.44) * t
    half_hips = rng.uniform(0.2, 0.26) * t
    kp = np.zeros((NUM_KEYPOINTS, 2))
    neck = np.array([center_x, neck_y])
    kp[NECK] = neck
    shoulder_drop = rng.uniform(0.05, 0.1) * t
    tilt = rng.normal(0, 0.03) * t  # one shoulder a little higher
    kp[RIGHT_SHOULDER] = neck + [-half_shoulders, shoulder_drop + tilt]
    kp[LEFT_SHOULDER] = neck + [half_shoulders, shoulder_drop - tilt]
    kp[RIGHT_HIP] = neck + [-half_hips, t]
    kp[LEFT_HIP] = neck + [half_hips, t]
    # Lean: rotate the upper body about the hips' midpoint.
    pivot = 0.5 * (kp[RIGHT_HIP] + kp[LEFT_HIP])
    rot = np.array([[np.cos(lean), -np.sin(lean)], [np.sin(lean), np.cos(lean)]])
    for k in (RIGHT_SHOULDER, NECK, LEFT_SHOULDER):
        kp[k] = pivot + rot @ (kp[k] - pivot)
    head_axes = np.array([rng.uniform(0.14, 0.17), rng.uniform(0.18, 0.21)]) * t
    up = rot @ np.array([0.0, -1.0])
    head_center = kp[NECK] + up * (0.13 * t + head_axes[1]) + [rng.normal(0, 0.03 * t), 0]

    poses = []
    for side in (-1, 1):
        is_outboard = side == outboard
        if row == "back":
            choice = rng.choice(["lap", "lap", "raised", "phone", "cross"])
        else:
            weights = {"wheel": 3.0 if is_driver else 0.0, "lap": 2.0, "raised": 0.7, "phone": 0.6,
                       "cross": 0.8, "reach": 0.0 if is_outboard else 0.8, "window": 0.8 if is_outboard else 0.0}
            names = list(weights)
            p = np.array([weights[n] for n in names])
            choice = names[rng.choice(len(names), p=p / p.sum())]
        if choice == "phone" and "phone" in poses:
            choice = "lap"
        poses.append(str(choice))
    for side, pose in zip((-1, 1), poses):
        _, elbow_idx, wrist_idx = ARMS[0] if side < 0 else ARMS[1]
        kp[elbow_idx], kp[wrist_idx] = _arm_targets(pose, side, kp, t, head_center, head_axes, wheel,
                                                    frame_center_x, rng)
    return Person(
        row=row, keypoints=kp, torso=t, head_center=head_center, head_axes=head_axes,
        arm_poses=(poses[0], poses[1]), belted=bool(rng.random() < (0.85 if row == "front" else 0.6)),
        outboard=outboard, skin=_skin(rng), top=_clothing(rng), long_sleeves=bool(rng.random() < 0.6),
        pants=_vary(_clothing(rng) * 0.7, rng), hair=_vary(_HAIR_COLOURS[rng.integers(len(_HAIR_COLOURS))], rng),
        hair_style=str(rng.choice(["short", "short", "long", "bald", "cap"])),
        belt_colour=_vary(np.full(3, rng.choice([35.0, 50.0, 70.0, 150.0]), np.float32), rng, 0.08),
        face_yaw=float(rng.uniform(-0.35, 0.35)), neckline=str(rng.choice(["round", "v", "collar"])),
    )


# --------------------------------------------------------------------------------------------
# Drawing the cabin and the people
# --------------------------------------------------------------------------------------------


def _exterior(width: int, height: int, rng: np.random.Generator, night: bool) -> np.ndarray:
    """What the windows show: sky over trees / buildings, blurred. (H, W, 3) float32."""
    small_w, small_h = max(width // 8, 8), max(height // 8, 8)
    ys = np.linspace(0, 1, small_h, dtype=np.float32)[:, None, None]
    sky = _hsv(rng.uniform(95, 115), rng.uniform(10, 90), rng.uniform(215, 255))
    ground = _hsv(rng.uniform(20, 80), rng.uniform(40, 140), rng.uniform(90, 170))
    horizon = rng.uniform(0.3, 0.6)
    blend = np.clip((ys - horizon) * 4.0 + 0.5, 0, 1)
    img = sky * (1 - blend) + ground * blend
    img = np.broadcast_to(img, (small_h, small_w, 3)).copy()
    blobs = np.zeros((small_h, small_w, 3), np.uint8)
    for _ in range(int(rng.integers(4, 10))):
        colour = _hsv(rng.uniform(25, 90), rng.uniform(50, 200), rng.uniform(50, 160))
        centre = (int(rng.integers(0, small_w)), int(rng.integers(int(small_h * 0.2), small_h)))
        axes = (int(rng.integers(2, max(3, small_w // 6))), int(rng.integers(2, max(3, small_h // 4))))
        cv2.ellipse(blobs, centre, axes, 0, 0, 360, [int(c) for c in colour], -1)
    covered = blobs.max(axis=2) > 0
    img[covered] = blobs[covered].astype(np.float32)
    img8 = cv2.GaussianBlur(np.clip(img, 0, 255).astype(np.uint8), (0, 0), 1.2)
    img = cv2.resize(img8, (width, height), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    if night:
        img = img * np.float32(rng.uniform(0.1, 0.25))
    return img


def _fabric(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """Low-frequency multiplicative texture around 1, (H, W) float32."""
    small = rng.integers(0, 256, (max(height // 6, 4), max(width // 6, 4)), dtype=np.uint8)
    small = cv2.GaussianBlur(small, (0, 0), 1.0)
    big = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    return 1.0 + (big - 128.0) * np.float32(0.0012)


def _draw_cabin(p: Painter, rng: np.random.Generator, palette: dict, exterior: np.ndarray) -> None:
    """Everything behind the front seats: liner, windows, pillars, doors, rear bench."""
    W, H = p.width, p.height
    big = 3.0  # shapes run well past the frame so that zoom / roll never shows a gap
    interior = palette["interior"]
    # Dark cabin interior behind everything.
    p.polygon([[-big * W, -big * H], [big * W, -big * H], [big * W, big * H], [-big * W, big * H]],
              interior * 0.55, shade=p.shade_linear([0, 0], [0, H], 0.3))
    # Rear window and rear side windows.
    rear_top, rear_bottom = rng.uniform(0.1, 0.16) * H, rng.uniform(0.3, 0.36) * H
    p.polygon([[0.36 * W, rear_top], [0.64 * W, rear_top], [0.67 * W, rear_bottom], [0.33 * W, rear_bottom]],
              exterior * np.float32(0.8))
    for s in (-1, 1):
        cx = 0.5 * W + s * 0.27 * W
        p.polygon([[cx - 0.07 * W, rear_top + 0.02 * H], [cx + 0.07 * W, rear_top + 0.02 * H],
                   [cx + 0.08 * W, rear_bottom + 0.03 * H], [cx - 0.08 * W, rear_bottom + 0.03 * H]],
                  exterior * np.float32(0.75))
    # Rear bench and its headrests (visible between the front seats).
    bench_top = rng.uniform(0.3, 0.36) * H
    p.polygon([[0.22 * W, bench_top], [0.78 * W, bench_top], [0.8 * W, 0.75 * H], [0.2 * W, 0.75 * H]],
              palette["seat"] * 0.7, shade=p.shade_linear([0, bench_top], [0, 0.5 * H], -0.4))
    # Roof liner with a soft curve, darker towards the top of the frame.
    roof_edge = rng.uniform(0.08, 0.13) * H
    xs = np.linspace(-0.2 * W, 1.2 * W, 9)
    edge = roof_edge + 0.05 * H * ((xs - 0.5 * W) / (0.5 * W)) ** 2
    p.polygon(np.concatenate([[[-big * W, -big * H], [big * W, -big * H]], np.stack([xs, edge], 1)[::-1]]),
              palette["roof"], shade=p.shade_linear([0, roof_edge], [0, -0.15 * H], -0.5))
    # Front side windows with the outside, B-pillars and door panels at both edges.
    for s in (-1, 1):
        edge_x = 0.5 * W + s * 0.5 * W
        inner = 0.5 * W + s * rng.uniform(0.36, 0.4) * W
        top, bottom = rng.uniform(0.1, 0.16) * H, rng.uniform(0.5, 0.58) * H
        window = [[inner, top + 0.03 * H], [edge_x + s * big * W, top - 0.1 * H],
                  [edge_x + s * big * W, bottom + 0.1 * H], [inner + s * 0.02 * W, bottom]]
        p.polygon(window, exterior)
        p.polyline([window[0], window[3]], 0.012 * H, palette["trim"] * 0.6)  # window seal
        pillar_w = rng.uniform(0.045, 0.07) * W
        p.polygon([[inner - s * pillar_w, -0.1 * H], [inner + s * 0.01 * W, -0.1 * H],
                   [inner + s * 0.02 * W, 0.8 * H], [inner - s * (pillar_w * 1.3), 0.8 * H]],
                  palette["trim"], shade=p.shade_linear([inner, 0], [s * pillar_w, 0], 0.25))
        door_top = bottom + 0.01 * H
        p.polygon([[inner + s * 0.03 * W, door_top], [edge_x + s * big * W, door_top - 0.05 * H],
                   [edge_x + s * big * W, big * H], [inner - s * 0.02 * W, big * H]],
                  palette["trim"] * 0.85, shade=p.shade_linear([0, door_top], [0, 0.4 * H], -0.3))
        p.line([inner + s * 0.05 * W, door_top + 0.12 * H], [edge_x + s * 0.1 * W, door_top + 0.08 * H],
               0.03 * H, palette["trim"] * 1.15)  # armrest


def _draw_front_seat(p: Painter, cx: float, top: float, post: float, palette: dict) -> None:
    """Backrest (top edge at `top`) and headrest (on posts `post` long) of a front seat."""
    H = p.height
    seat, textured = palette["seat"], palette["seat_texture"]
    half_top, half_bottom = 0.27 * H, 0.31 * H
    p.polygon([[cx - half_top, top + 0.04 * H], [cx - half_top + 0.05 * H, top], [cx + half_top - 0.05 * H, top],
               [cx + half_top, top + 0.04 * H], [cx + half_bottom, 1.2 * H], [cx - half_bottom, 1.2 * H]],
              textured, shade=p.shade_cylinder([cx, top], [cx, H], half_top, 0.5, 0.0))
    for s in (-1, 1):  # side bolsters
        p.line([cx + s * 0.22 * H, top + 0.08 * H], [cx + s * 0.24 * H, 1.1 * H], 0.012 * H, seat * 0.75)
    post_top = top - post
    for s in (-1, 1):
        p.line([cx + s * 0.06 * H, post_top], [cx + s * 0.06 * H, top + 0.01 * H], 0.015 * H, palette["trim"] * 1.3)
    head_top = post_top - 0.17 * H
    rest = [[cx - 0.13 * H, head_top + 0.03 * H], [cx - 0.1 * H, head_top], [cx + 0.1 * H, head_top],
            [cx + 0.13 * H, head_top + 0.03 * H], [cx + 0.12 * H, post_top], [cx - 0.12 * H, post_top]]
    p.polygon(rest, textured, shade=p.shade_dome([cx, head_top + 0.08 * H], [0.14 * H, 0.12 * H], 0.35, (0.0, -0.3)))


def _draw_console(p: Painter, cx: float, top: float, palette: dict) -> None:
    """Centre armrest and console between the front seats (hides the back row's lap)."""
    H = p.height
    p.polygon([[cx - 0.1 * H, top], [cx + 0.1 * H, top], [cx + 0.16 * H, 1.2 * H], [cx - 0.16 * H, 1.2 * H]],
              palette["trim"] * 0.9, shade=p.shade_linear([cx, top], [0, 0.4 * H], -0.35))
    p.ellipse([cx, top + 0.005 * H], (0.1 * H, 0.025 * H), 0, palette["seat"] * 0.8)


def _torso_outline(kp: np.ndarray, t: float) -> np.ndarray:
    rs, ls, n, rh, lh = kp[RIGHT_SHOULDER], kp[LEFT_SHOULDER], kp[NECK], kp[RIGHT_HIP], kp[LEFT_HIP]
    across = ls - rs
    ex = across / max(np.hypot(*across), 1e-9)
    ey = np.array([-ex[1], ex[0]])  # down the body
    return np.array([
        rs - 0.06 * t * ex - 0.04 * t * ey,
        n - 0.1 * t * ex - 0.08 * t * ey,
        n + 0.1 * t * ex - 0.08 * t * ey,
        ls + 0.06 * t * ex - 0.04 * t * ey,
        ls + 0.12 * t * ex + 0.06 * t * ey,
        ls + 0.08 * t * ex + 0.35 * t * ey,
        lh + 0.16 * t * ex - 0.05 * t * ey,
        lh + 0.18 * t * ex + 0.3 * t * ey,
        rh - 0.18 * t * ex + 0.3 * t * ey,
        rh - 0.16 * t * ex - 0.05 * t * ey,
        rs - 0.08 * t * ex + 0.35 * t * ey,
        rs - 0.12 * t * ex + 0.06 * t * ey,
    ])


def _draw_body(p: Painter, person: Person, index: int, rng: np.random.Generator) -> None:
    """Hair at the back, thighs, torso, neck, head, face: everything but the belt and the arms."""
    kp, t = person.keypoints, person.torso
    torso_id, neck_id, head_id = p.new_part(index, "torso"), p.new_part(index, "neck"), p.new_part(index, "head")
    thigh_id = p.new_part(index, "thighs")
    hc, ha = person.head_center, person.head_axes
    if person.hair_style == "long":
        p.polygon([hc + [-1.05 * ha[0], -0.3 * ha[1]], hc + [1.05 * ha[0], -0.3 * ha[1]],
                   hc + [1.25 * ha[0], 1.9 * ha[1]], hc + [-1.25 * ha[0], 1.9 * ha[1]]], person.hair * 0.85, head_id)
    # Thighs come towards the camera from the hips: wide, going down past the frame.
    for hip, s in ((kp[RIGHT_HIP], -1), (kp[LEFT_HIP], 1)):
        knee = hip + np.array([s * 0.1 * t, 0.7 * t])
        p.line(hip, knee, 0.42 * t, person.pants, thigh_id, p.shade_cylinder(hip, knee, 0.21 * t, 0.4, 0.0))
    outline = _torso_outline(kp, t)
    mid_top, mid_bottom = 0.5 * (outline[1] + outline[2]), 0.5 * (outline[7] + outline[8])
    p.polygon(outline, person.top, torso_id,
              p.shade_cylinder(mid_top, mid_bottom, 0.45 * t, 0.35, 0.1))
    for shoulder, s in ((kp[RIGHT_SHOULDER], -1), (kp[LEFT_SHOULDER], 1)):  # rounded deltoids
        c = shoulder + np.array([s * 0.02 * t, 0.04 * t])
        p.ellipse(c, (0.1 * t, 0.11 * t), 0, person.top, torso_id, p.shade_dome(c, (0.12 * t, 0.12 * t), 0.3))
    # A shirt fold line and the hem's shadow hint at cloth.
    p.line(kp[NECK] + [0, 0.25 * t], mid_bottom - [0, 0.25 * t], 0.01 * t, person.top * 0.85, torso_id)
    # Neck from the neckline up under the chin.
    chin = hc + np.array([0, 0.85 * ha[1]])
    neck_poly = [kp[NECK] + [-0.1 * t, 0.0], chin + [-0.09 * t, 0], chin + [0.09 * t, 0], kp[NECK] + [0.1 * t, 0.0]]
    p.polygon(neck_poly, person.skin * 0.85, neck_id, p.shade_cylinder(chin, kp[NECK], 0.1 * t, 0.4, 0.0))
    if person.neckline == "v":
        p.polygon([kp[NECK] + [-0.1 * t, -0.02 * t], kp[NECK] + [0.1 * t, -0.02 * t], kp[NECK] + [0, 0.16 * t]],
                  person.skin * 0.9, neck_id)
    elif person.neckline == "collar":
        for s in (-1, 1):
            p.polygon([kp[NECK] + [s * 0.11 * t, -0.06 * t], kp[NECK] + [s * 0.01 * t, 0.05 * t],
                       kp[NECK] + [s * 0.13 * t, 0.04 * t]], _vary(person.top * 1.15, rng), torso_id)
    # Head: ears, face, hair, features.
    for s in (-1, 1):
        ear = hc + np.array([s * 0.98 * ha[0], 0.05 * ha[1]])
        p.ellipse(ear, (0.18 * ha[0], 0.26 * ha[1]), 0, person.skin * 0.85, head_id)
    p.ellipse(hc, ha, 0, person.skin, head_id, p.shade_dome(hc, ha, 0.3, (person.face_yaw * 0.5, -0.2)))
    if person.hair_style in ("short", "long"):
        p.ellipse(hc + [0, -0.28 * ha[1]], (1.04 * ha[0], 0.78 * ha[1]), 0, person.hair, head_id,
                  arc=(180, 360))
        p.ellipse(hc + [0, -0.3 * ha[1]], (1.04 * ha[0], 0.3 * ha[1]), 0, person.hair, head_id,
                  shade=p.shade_dome(hc, ha, 0.2))
    elif person.hair_style == "cap":
        cap = _vary(_clothing(rng), rng)
        p.ellipse(hc + [0, -0.32 * ha[1]], (1.06 * ha[0], 0.72 * ha[1]), 0, cap, head_id, arc=(180, 360))
        p.ellipse(hc + [person.face_yaw * ha[0], -0.3 * ha[1]], (1.0 * ha[0], 0.16 * ha[1]), 0, cap * 0.8, head_id)
    yaw = person.face_yaw * ha[0]
    eye_colour = np.full(3, 30.0, np.float32)
    for s in (-1, 1):
        eye = hc + np.array([yaw + s * 0.4 * ha[0], -0.02 * ha[1]])
        p.ellipse(eye + [0, -0.18 * ha[1]], (0.22 * ha[0], 0.05 * ha[1]), 0, person.hair * 0.9, head_id)  # brow
        p.ellipse(eye, (0.13 * ha[0], 0.07 * ha[1]), 0, eye_colour, head_id)
    p.line(hc + [1.1 * yaw, 0.05 * ha[1]], hc + [1.15 * yaw, 0.3 * ha[1]], 0.06 * ha[0], person.skin * 0.8, head_id)
    p.ellipse(hc + [1.05 * yaw, 0.55 * ha[1]], (0.28 * ha[0], 0.05 * ha[1]), 0, person.skin * 0.6, head_id)


def _bezier(a: Point, control: Point, b: Point, count: int = 8) -> np.ndarray:
    s = np.linspace(0, 1, count)[:, None]
    return (1 - s) ** 2 * a + 2 * (1 - s) * s * control + s ** 2 * b


def _draw_belt(p: Painter, person: Person, index: int, belt_ids: list[int]) -> None:
    """Shoulder belt from above the door-side shoulder to the opposite hip, plus the lap belt."""
    kp, t = person.keypoints, person.torso
    belt_id = p.new_part(index, "belt")
    belt_ids.append(belt_id)
    out_shoulder = kp[LEFT_SHOULDER] if person.outboard > 0 else kp[RIGHT_SHOULDER]
    in_hip = kp[RIGHT_HIP] if person.outboard > 0 else kp[LEFT_HIP]
    out_hip = kp[LEFT_HIP] if person.outboard > 0 else kp[RIGHT_HIP]
    o = person.outboard
    anchor = out_shoulder + np.array([o * 0.2 * t, -0.24 * t])  # the pillar's guide loop, behind the seat
    over = out_shoulder + np.array([-o * 0.1 * t, -0.05 * t])
    buckle = in_hip + np.array([-o * 0.02 * t, 0.02 * t])
    width = 0.085 * t
    shoulder_belt = np.concatenate([_bezier(anchor, over + [o * 0.1 * t, -0.12 * t], over, 5),
                                    _bezier(over, 0.5 * (over + buckle) + [o * 0.05 * t, 0.06 * t], buckle, 8)[1:]])
    lap_belt = _bezier(buckle, 0.5 * (buckle + out_hip) + [0, 0.08 * t], out_hip + [o * 0.15 * t, 0], 8)
    for path in (shoulder_belt, lap_belt):
        p.polyline(path, width, person.belt_colour, belt_id)
        p.polyline(path + [0, -0.3 * width], 0.15 * width, person.belt_colour * 1.25, belt_id)  # webbing edge


def _draw_arm(p: Painter, person: Person, index: int, side: int) -> None:
    kp, t = person.keypoints, person.torso
    shoulder_idx, elbow_idx, wrist_idx = ARMS[0] if side < 0 else ARMS[1]
    name = "right" if side < 0 else "left"
    upper_id, fore_id, hand_id = (p.new_part(index, f"{name}_upper_arm"), p.new_part(index, f"{name}_forearm"),
                                  p.new_part(index, f"{name}_hand"))
    s, e, w = kp[shoulder_idx] + np.array([side * 0.03 * t, 0.03 * t]), kp[elbow_idx], kp[wrist_idx]
    upper_w, fore_w = 0.17 * t, 0.13 * t
    p.line(s, e, upper_w, person.top, upper_id, p.shade_cylinder(s, e, upper_w / 2, 0.45, 0.15))
    p.line(e, w, fore_w, person.sleeves, fore_id, p.shade_cylinder(e, w, fore_w / 2, 0.45, 0.15))
    if person.long_sleeves:  # cuff
        p.line(w - 0.12 * (w - e), w - 0.03 * (w - e), fore_w * 1.05, person.top * 0.85, fore_id)
    direction = w - e
    direction = direction / max(np.hypot(*direction), 1e-9)
    hand_center = w + direction * 0.07 * t
    angle = np.degrees(np.arctan2(direction[1], direction[0]))
    p.ellipse(hand_center, (0.1 * t, 0.065 * t), angle, person.skin, hand_id,
              p.shade_dome(hand_center, (0.1 * t, 0.1 * t), 0.3))


def _draw_wheel(p: Painter, wheel: dict, colour: np.ndarray) -> None:
    c, (ax, ay) = wheel["center"], wheel["axes"]
    rim = 0.055 * p.height
    for angle in (200.0, 340.0, 90.0):  # spokes
        a = np.radians(angle)
        p.line(c, c + np.array([ax * np.cos(a), ay * np.sin(a)]) * 0.9, 0.05 * p.height, colour * 1.1)
    p.ellipse(c, (0.3 * ax, 0.3 * ay), 0, colour * 1.2, shade=p.shade_dome(c, (0.3 * ax, 0.3 * ay), 0.4))
    p.ellipse(c, (ax, ay), 0, colour, width=rim, shade=p.shade_linear(c, [0, -ay], 0.35))


def _draw_fingers(p: Painter, person: Person, index: int, side: int, wheel: dict) -> None:
    """Fingers wrapped over the rim, in front of it, for a hand on the wheel."""
    wrist = person.keypoints[RIGHT_WRIST if side < 0 else LEFT_WRIST]
    rel = (wrist - wheel["center"]) / wheel["axes"]
    on_rim = wheel["center"] + rel / max(np.hypot(*rel), 1e-9) * wheel["axes"]
    p.ellipse(on_rim, (0.07 * person.torso, 0.035 * person.torso),
              np.degrees(np.arctan2(on_rim[1] - wheel["center"][1], on_rim[0] - wheel["center"][0])) + 90,
              person.skin * 0.95, p.new_part(index, "right_hand" if side < 0 else "left_hand"))


def _draw_dashboard(p: Painter, rng: np.random.Generator, palette: dict) -> None:
    W, H = p.width, p.height
    top = rng.uniform(0.86, 0.96) * H
    xs = np.linspace(-0.3 * W, 1.3 * W, 11)
    edge = top - 0.06 * H * (1 - ((xs - 0.5 * W) / (0.8 * W)) ** 2) + rng.normal(0, 0.005 * H, xs.size)
    dash = palette["dash"]
    p.polygon(np.concatenate([np.stack([xs, edge], 1), [[1.3 * W, 2 * H], [-0.3 * W, 2 * H]]]), dash,
              shade=p.shade_linear([0, top], [0, 0.15 * H], -0.4))
    p.polyline(np.stack([xs, edge + 0.004 * H], 1), 0.008 * H, dash * 1.5)  # lit lip of the dashboard


# --------------------------------------------------------------------------------------------
# A whole frame
# --------------------------------------------------------------------------------------------

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


@dataclass
class Frame:
    """One rendered frame. image (H, W, 3) BGR or (H, W) grey uint8; seatbelt_mask (H, W) uint8 {0, 255};
    keypoints (P, 9, 3) float64 (x, y, v) in image pixels, missing as (0, 0, 0); rows per person."""

    image_id: str
    image: np.ndarray
    seatbelt_mask: np.ndarray
    keypoints: np.ndarray
    rows: list[str]  # "front" / "back" per person
    belted: list[bool]  # per person: wears a seatbelt (its visible pixels are in seatbelt_mask)
    wheel_annotation: bool  # also write a non-Person "Steering_Wheel" annotation


def _camera(width: int, height: int, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    zoom = rng.uniform(0.9, 1.3)
    roll = np.radians(rng.normal(0, 1.5))
    shift = np.array([rng.normal(0, 0.03) * width, rng.normal(0, 0.03) * height])
    center = np.array([width / 2, height / 2])
    rot = zoom * np.array([[np.cos(roll), -np.sin(roll)], [np.sin(roll), np.cos(roll)]])
    return np.concatenate([rot, (center + shift - rot @ center)[:, None]], axis=1), float(zoom)


def _visibility(p: Painter, people: list[Person]) -> np.ndarray:
    """(P, 9, 3) keypoints in image pixels with v: 2 visible, 1 occluded, 0 outside (x = y = 0)."""
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


def _finish(image: np.ndarray, rng: np.random.Generator, nir: bool) -> np.ndarray:
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


def render_frame(seed: int, split_index: int, frame_index: int, width: int = DEFAULT_WIDTH,
                 height: int = DEFAULT_HEIGHT) -> Frame:
    """Draw frame `frame_index` of split `split_index` (0 train, 1 valid); the same arguments
    always give the same frame."""
    rng = np.random.default_rng([seed, split_index, frame_index])
    W, H = float(width), float(height)
    camera, zoom = _camera(width, height, rng)
    p = Painter(width, height, camera, zoom)
    nir = bool(rng.random() < 0.25)
    night = nir and bool(rng.random() < 0.5)
    seat = _clothing(rng) * np.float32(0.6)
    palette = {
        "interior": _vary(np.full(3, rng.uniform(40, 110), np.float32), rng, 0.08),
        "seat": seat,
        "roof": _vary(np.full(3, rng.uniform(120, 200), np.float32) * [0.92, 1.0, 1.05], rng, 0.05),
        "trim": _vary(np.full(3, rng.uniform(35, 120), np.float32), rng, 0.08),
        "dash": _vary(np.full(3, rng.uniform(20, 60), np.float32), rng, 0.1),
    }
    palette["seat_texture"] = palette["seat"] * _fabric(width, height, rng)[..., None]
    left_hand_drive = bool(rng.random() < 0.75)  # driver on the image's right
    driver_x = (0.72 if left_hand_drive else 0.28) * W + rng.normal(0, 0.015 * W)
    passenger_x = (0.28 if left_hand_drive else 0.72) * W + rng.normal(0, 0.015 * W)
    wheel = {"center": np.array([driver_x + rng.normal(0, 0.02 * W), rng.uniform(1.0, 1.1) * H]),
             "axes": np.array([rng.uniform(0.3, 0.36), rng.uniform(0.2, 0.26)]) * H}
    exterior = _exterior(width, height, rng, night)

    people: list[Person] = []
    front_torso = 0.4 * H
    people.append(_make_person("front", driver_x + rng.normal(0, 0.01 * W), rng.uniform(0.34, 0.4) * H,
                               front_torso * rng.uniform(0.9, 1.06), 1 if left_hand_drive else -1, True, wheel,
                               0.5 * W, rng))
    if rng.random() < 0.6:
        people.append(_make_person("front", passenger_x + rng.normal(0, 0.01 * W), rng.uniform(0.34, 0.4) * H,
                                   front_torso * rng.uniform(0.88, 1.04), -1 if left_hand_drive else 1, False,
                                   None, 0.5 * W, rng))
    if rng.random() < 0.35:  # a smaller passenger in the back row, seen between the front seats
        back_x = 0.5 * W + rng.uniform(-0.05, 0.05) * W
        neck_y, torso, outboard = rng.uniform(0.34, 0.38) * H, rng.uniform(0.12, 0.15) * H, int(rng.choice([-1, 1]))
        for _ in range(4):  # shrink until the torso is clearly below the front-row threshold (SPEC 5)
            back_person = _make_person("back", back_x, neck_y, torso, outboard, False, None, back_x, rng)
            height_384 = torso_height_384(p.to_pixels(back_person.keypoints), width, height)
            if height_384 < BACK_ROW_MAX_TORSO_384:
                break
            torso *= 0.95 * BACK_ROW_MAX_TORSO_384 / height_384
        else:
            raise RuntimeError(f"back-row torso stays at {height_384:.1f} px for a {width}x{height} frame")
        people.insert(0, back_person)

    _draw_cabin(p, rng, palette, exterior)
    belt_ids: list[int] = []
    back = [i for i, q in enumerate(people) if q.row == "back"]
    front = [i for i, q in enumerate(people) if q.row == "front"]
    for i in back:  # the back-row passenger is drawn before the front seats hide parts of them
        _draw_body(p, people[i], i, rng)
        if people[i].belted:
            _draw_belt(p, people[i], i, belt_ids)
        for side in (-1, 1):
            _draw_arm(p, people[i], i, side)
    for cx in (driver_x, passenger_x):  # occupied or not; in front of the back-row passenger
        _draw_front_seat(p, cx, rng.uniform(0.27, 0.31) * H, rng.uniform(0.02, 0.05) * H, palette)
    _draw_console(p, 0.5 * (driver_x + passenger_x), rng.uniform(0.56, 0.64) * H, palette)
    for i in front:
        _draw_body(p, people[i], i, rng)
    for i in front:
        if people[i].belted:
            _draw_belt(p, people[i], i, belt_ids)
    arms = [(i, side) for i in front for side in (-1, 1)]
    for j in rng.permutation(len(arms)):
        _draw_arm(p, people[arms[j][0]], arms[j][0], arms[j][1])
    show_wheel = bool(rng.random() < 0.85)
    if show_wheel:
        _draw_wheel(p, wheel, palette["dash"] * 0.9)
        driver_index = front[0]
        for side, pose in zip((-1, 1), people[driver_index].arm_poses):
            if pose == "wheel":
                _draw_fingers(p, people[driver_index], driver_index, side, wheel)
    _draw_dashboard(p, rng, palette)

    keypoints = _visibility(p, people)
    seatbelt = np.where(np.isin(p.owner, belt_ids), 255, 0).astype(np.uint8)
    image = _finish(p.image, rng, nir)
    if nir and rng.random() < 0.5:
        image = np.repeat(image[..., None], 3, axis=2)  # grey stored as 3 channels
    split = SPLITS[split_index][0]
    wheel_annotation = show_wheel and bool(rng.random() < 0.3)
    return Frame(f"{split}/frame_{frame_index:06d}", image, seatbelt, keypoints, [q.row for q in people],
                 [q.belted for q in people], wheel_annotation)


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def _annotations(frame: Frame) -> list[dict]:
    result = []
    for person in frame.keypoints:
        flat: list[float | int] = []
        for x, y, v in person:
            if v == 0:
                flat += [0, 0, 0]
            else:
                flat += [round(float(x), 1), round(float(y), 1), int(v)]
        result.append({"image_id": frame.image_id, "label": "Person", "keypoints": flat})
    if frame.wheel_annotation:  # a non-Person label that loaders must skip
        result.append({"image_id": frame.image_id, "label": "Steering_Wheel", "keypoints": [0] * 27})
    return result


def write_annotation_file(path: Path, annotations: Sequence[dict]) -> None:
    """One annotation per line, keys sorted: stable bytes and readable diffs."""
    lines = [json.dumps(a, sort_keys=True) for a in annotations]
    path.write_text('{"annotations": [\n' + ",\n".join(lines) + "\n]}\n", encoding="utf-8")


def write_dataset(out: Path, train: int, valid: int, seed: int, width: int = DEFAULT_WIDTH,
                  height: int = DEFAULT_HEIGHT) -> dict:
    """Render and write both splits; returns counts for the summary line."""
    out = Path(out)
    stats = {"frames": 0, "people": 0, "back_row": 0, "grey": 0, "single_channel": 0}
    for split_index, ((split, json_name), count) in enumerate(zip(SPLITS, (train, valid))):
        annotations: list[dict] = []
        for frame_index in range(count):
            frame = render_frame(seed, split_index, frame_index, width, height)
            for folder, pixels in ((RAW_IMAGES_DIR, frame.image),
                                   (SEATBELT_MASK_DIR, np.repeat(frame.seatbelt_mask[..., None], 3, axis=2))):
                path = out / folder / f"{frame.image_id}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                ok, encoded = cv2.imencode(".png", pixels, PNG_PARAMS)
                if not ok:
                    raise RuntimeError(f"PNG encoding failed for {path}")
                path.write_bytes(encoded.tobytes())
            annotations += _annotations(frame)
            stats["frames"] += 1
            stats["people"] += len(frame.rows)
            stats["back_row"] += frame.rows.count("back")
            stats["single_channel"] += frame.image.ndim == 2
            stats["grey"] += frame.image.ndim == 2 or bool(np.array_equal(frame.image[..., 0], frame.image[..., 1])
                                                          and np.array_equal(frame.image[..., 1], frame.image[..., 2]))
        write_annotation_file(out / json_name, annotations)
    return stats


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="output folder (created)")
    parser.add_argument("--train", type=int, required=True, help="number of training frames")
    parser.add_argument("--valid", type=int, required=True, help="number of validation frames")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed -> same files")
    parser.add_argument("--width", type=int, default=DEFAULT_WIDTH, help="frame width in pixels")
    parser.add_argument("--height", type=int, default=DEFAULT_HEIGHT, help="frame height in pixels")
    args = parser.parse_args(argv)
    if args.train < 0 or args.valid < 0 or args.width < 64 or args.height < 64:
        parser.error("--train/--valid must be >= 0 and --width/--height >= 64")
    start = time.perf_counter()
    stats = write_dataset(args.out, args.train, args.valid, args.seed, args.width, args.height)
    print(f"wrote {stats['frames']} frames ({stats['people']} people, {stats['back_row']} in the back row, "
          f"{stats['grey']} grey, {stats['single_channel']} single-channel) to {args.out} "
          f"in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
