"""The car around the people: what the windows show, cabin, seats, console, wheel, dashboard.

Coordinates are scene pixels (common.synthetic.painter). `palette` holds BGR float32 (3,)
colours "interior", "seat", "roof", "trim", "dash" and the textured "seat_texture" (H, W, 3).
"""

from __future__ import annotations

import cv2
import numpy as np

from common.synthetic.colours import hsv
from common.synthetic.painter import Painter


def outdoor_scene(width: int, height: int, rng: np.random.Generator, night: bool) -> np.ndarray:
    """What the windows show: sky over trees / buildings, blurred. (H, W, 3) float32."""
    small_w, small_h = max(width // 8, 8), max(height // 8, 8)
    ys = np.linspace(0, 1, small_h, dtype=np.float32)[:, None, None]
    sky = hsv(rng.uniform(95, 115), rng.uniform(10, 90), rng.uniform(215, 255))
    ground = hsv(rng.uniform(20, 80), rng.uniform(40, 140), rng.uniform(90, 170))
    horizon = rng.uniform(0.3, 0.6)
    blend = np.clip((ys - horizon) * 4.0 + 0.5, 0, 1)
    img = sky * (1 - blend) + ground * blend
    img = np.broadcast_to(img, (small_h, small_w, 3)).copy()
    blobs = np.zeros((small_h, small_w, 3), np.uint8)
    for _ in range(int(rng.integers(4, 10))):
        colour = hsv(rng.uniform(25, 90), rng.uniform(50, 200), rng.uniform(50, 160))
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


def fabric_texture(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """Low-frequency multiplicative texture around 1, (H, W) float32."""
    small = rng.integers(0, 256, (max(height // 6, 4), max(width // 6, 4)), dtype=np.uint8)
    small = cv2.GaussianBlur(small, (0, 0), 1.0)
    big = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    return 1.0 + (big - 128.0) * np.float32(0.0012)


def draw_cabin(p: Painter, rng: np.random.Generator, palette: dict, exterior: np.ndarray) -> None:
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


def draw_front_seat(p: Painter, cx: float, top: float, post: float, palette: dict) -> None:
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


def draw_console(p: Painter, cx: float, top: float, palette: dict) -> None:
    """Centre armrest and console between the front seats (hides the back row's lap)."""
    H = p.height
    p.polygon([[cx - 0.1 * H, top], [cx + 0.1 * H, top], [cx + 0.16 * H, 1.2 * H], [cx - 0.16 * H, 1.2 * H]],
              palette["trim"] * 0.9, shade=p.shade_linear([cx, top], [0, 0.4 * H], -0.35))
    p.ellipse([cx, top + 0.005 * H], (0.1 * H, 0.025 * H), 0, palette["seat"] * 0.8)


def draw_wheel(p: Painter, wheel: dict, colour: np.ndarray) -> None:
    """Steering wheel: three spokes, the hub and the rim; wheel {"center": (2,), "axes": (2,)}."""
    c, (ax, ay) = wheel["center"], wheel["axes"]
    rim = 0.055 * p.height
    for angle in (200.0, 340.0, 90.0):  # spokes
        a = np.radians(angle)
        p.line(c, c + np.array([ax * np.cos(a), ay * np.sin(a)]) * 0.9, 0.05 * p.height, colour * 1.1)
    p.ellipse(c, (0.3 * ax, 0.3 * ay), 0, colour * 1.2, shade=p.shade_dome(c, (0.3 * ax, 0.3 * ay), 0.4))
    p.ellipse(c, (ax, ay), 0, colour, width=rim, shade=p.shade_linear(c, [0, -ay], 0.35))


def draw_dashboard(p: Painter, rng: np.random.Generator, palette: dict) -> None:
    """The dashboard's curved top edge across the bottom of the frame, with a lit lip."""
    W, H = p.width, p.height
    top = rng.uniform(0.86, 0.96) * H
    xs = np.linspace(-0.3 * W, 1.3 * W, 11)
    edge = top - 0.06 * H * (1 - ((xs - 0.5 * W) / (0.8 * W)) ** 2) + rng.normal(0, 0.005 * H, xs.size)
    dash = palette["dash"]
    p.polygon(np.concatenate([np.stack([xs, edge], 1), [[1.3 * W, 2 * H], [-0.3 * W, 2 * H]]]), dash,
              shade=p.shade_linear([0, top], [0, 0.15 * H], -0.4))
    p.polyline(np.stack([xs, edge + 0.004 * H], 1), 0.008 * H, dash * 1.5)  # lit lip of the dashboard
