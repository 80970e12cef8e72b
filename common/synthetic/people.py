"""Occupants: what a person is (Person), seating one (make_person), and drawing one.

Scene coordinates are nominal frame pixels before the camera's zoom, roll and shift
(common.synthetic.painter); the camera faces the people, so a person's right side is on the
image's left.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.posedata.pose import (
    ARMS,
    HIPS,
    LEFT_HIP,
    LEFT_SHOULDER,
    LEFT_WRIST,
    NECK,
    NUM_KEYPOINTS,
    REFERENCE_IMAGE_SIZE,
    RIGHT_HIP,
    RIGHT_SHOULDER,
    RIGHT_WRIST,
)
from common.synthetic.arms import arm_targets, choose_arm_poses
from common.synthetic.colours import HAIR_COLOURS, clothing_colour, skin_colour, vary
from common.synthetic.painter import Painter, Point


@dataclass
class Person:
    """One occupant. `keypoints` (9, 2) in scene coordinates, in common.posedata.pose order."""

    row: str  # "front" or "back"
    keypoints: np.ndarray
    torso: float  # neck-to-hip height in scene pixels
    head_center: np.ndarray
    head_axes: np.ndarray
    arm_poses: tuple[str, str]  # (right arm, left arm), families of common.synthetic.arms
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
        """Colour of the forearms: the top's with long sleeves, else the skin's."""
        return self.top if self.long_sleeves else self.skin


def torso_height_384(keypoints: np.ndarray, width: int, height: int) -> float:
    """Mean neck-hip distance (the arm augmentation's torso height) after stretching a
    width x height frame to 384 x 384.

    keypoints: (9, 2+) source pixels; every hip counts (visibility is not looked at)."""
    scale = np.array([REFERENCE_IMAGE_SIZE / width, REFERENCE_IMAGE_SIZE / height])
    points = np.asarray(keypoints, np.float64)[:, :2] * scale
    return float(np.mean([np.hypot(*(points[h] - points[NECK])) for h in HIPS]))


def make_person(row: str, center_x: float, neck_y: float, torso: float, outboard: int, is_driver: bool,
                wheel: dict | None, frame_center_x: float, allowed_arm_poses: frozenset[str],
                rng: np.random.Generator) -> Person:
    """Seat one person: neck at (center_x, neck_y) and `torso` neck-to-hip height, scene pixels.

    row "front" or "back"; outboard +1 when the person's left side faces the door (see Person);
    wheel {"center", "axes"} for the driver, else None; frame_center_x: where a "reach" arm goes;
    allowed_arm_poses: checked by common.synthetic.arms.check_arm_poses.
    """
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

    poses = choose_arm_poses(row, is_driver and wheel is not None, outboard, allowed_arm_poses, rng)
    for side, pose in zip((-1, 1), poses):
        _, elbow_idx, wrist_idx = ARMS[0] if side < 0 else ARMS[1]
        kp[elbow_idx], kp[wrist_idx] = arm_targets(pose, side, kp, t, head_center, head_axes, wheel,
                                                   frame_center_x, rng)
    return Person(
        row=row, keypoints=kp, torso=t, head_center=head_center, head_axes=head_axes,
        arm_poses=poses, belted=bool(rng.random() < (0.85 if row == "front" else 0.6)),
        outboard=outboard, skin=skin_colour(rng), top=clothing_colour(rng), long_sleeves=bool(rng.random() < 0.6),
        pants=vary(clothing_colour(rng) * 0.7, rng), hair=vary(HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))], rng),
        hair_style=str(rng.choice(["short", "short", "long", "bald", "cap"])),
        belt_colour=vary(np.full(3, rng.choice([35.0, 50.0, 70.0, 150.0]), np.float32), rng, 0.08),
        face_yaw=float(rng.uniform(-0.35, 0.35)), neckline=str(rng.choice(["round", "v", "collar"])),
    )


def _torso_outline(kp: np.ndarray, t: float) -> np.ndarray:
    """(12, 2) outline of the shirt around shoulders, neck and hips, `t` = torso height."""
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


def draw_body(p: Painter, person: Person, index: int, rng: np.random.Generator) -> None:
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
                       kp[NECK] + [s * 0.13 * t, 0.04 * t]], vary(person.top * 1.15, rng), torso_id)
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
        cap = vary(clothing_colour(rng), rng)
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
    """(count, 2) points of the quadratic Bezier curve a -> b pulled towards `control`."""
    s = np.linspace(0, 1, count)[:, None]
    return (1 - s) ** 2 * a + 2 * (1 - s) * s * control + s ** 2 * b


def draw_belt(p: Painter, person: Person, index: int, belt_ids: list[int]) -> None:
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


def draw_arm(p: Painter, person: Person, index: int, side: int) -> None:
    """Upper arm, forearm (with a cuff for long sleeves) and hand; side -1 = the right arm."""
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


def draw_fingers(p: Painter, person: Person, index: int, side: int, wheel: dict) -> None:
    """Fingers wrapped over the rim, in front of it, for a hand on the wheel."""
    wrist = person.keypoints[RIGHT_WRIST if side < 0 else LEFT_WRIST]
    rel = (wrist - wheel["center"]) / wheel["axes"]
    on_rim = wheel["center"] + rel / max(np.hypot(*rel), 1e-9) * wheel["axes"]
    p.ellipse(on_rim, (0.07 * person.torso, 0.035 * person.torso),
              np.degrees(np.arctan2(on_rim[1] - wheel["center"][1], on_rim[0] - wheel["center"][0])) + 90,
              person.skin * 0.95, p.new_part(index, "right_hand" if side < 0 else "left_hand"))
