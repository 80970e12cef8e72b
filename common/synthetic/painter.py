"""Painter: anti-aliased shapes on a float image, plus a map of which part owns each pixel.

The owner map decides keypoint visibility and the seatbelt mask (common.synthetic.camera).
Shapes use OpenCV's fixed-point drawing and elementwise float arithmetic only, so other
machines compute the same pixels.
"""

from __future__ import annotations

from typing import Callable

import cv2
import numpy as np

_SHIFT_BITS = 4  # sub-pixel precision of OpenCV drawing: 1/16 px
_FIXED = float(1 << _SHIFT_BITS)

Point = np.ndarray  # (2,) float64 (x, y)
# Brightness factor at image pixels: (xs, ys) float32 (h, w) -> (h, w) float32.
Shade = Callable[[np.ndarray, np.ndarray], np.ndarray]


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
        """Register a part (person index, -1 for the car; name such as "left_hand"); returns its id."""
        self.parts.append((person, name))
        return len(self.parts) - 1

    # ---- shapes
    def polygon(self, points, colour, part: int = 0, shade: Shade | None = None) -> None:
        """Filled polygon through `points` (N, 2) in scene coordinates."""
        cv2.fillPoly(self._coverage, [self._fixed(points)], 255, cv2.LINE_AA, _SHIFT_BITS)
        self._composite(colour, part, shade)

    def line(self, start, end, width: float, colour, part: int = 0, shade: Shade | None = None) -> None:
        """A band of `width` scene pixels with round caps."""
        self.polyline([start, end], width, colour, part, shade)

    def polyline(self, points, width: float, colour, part: int = 0, shade: Shade | None = None) -> None:
        """Connected bands of `width` scene pixels through `points` (N, 2), painted as one shape."""
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
        """Blend `colour` (BGR (3,) or a full-frame (H, W, 3) texture) through the coverage just
        drawn, record `part` where coverage is at least half, and clear the coverage."""
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
