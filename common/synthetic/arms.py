"""Arm poses: the families, which arms each applies to, drawing them, and the joints they give.

ARM_POSE_RULES (also printed by `python -m common.synthetic --help`) states the families and
the rules of a restriction. With every family allowed the draws are exactly the generator's
draws from before restrictions existed, so the same seed gives the same frames; with a
restriction the draws depend on the seed and the set only, so they too give the same frames
run after run.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from common.posedata.pose import LEFT_HIP, LEFT_SHOULDER, RIGHT_HIP, RIGHT_SHOULDER
from common.synthetic.painter import Point

ARM_POSE_FAMILIES: tuple[str, ...] = ("wheel", "lap", "raised", "phone", "cross", "reach", "window")
ALL_ARM_POSES = frozenset(ARM_POSE_FAMILIES)
FALLBACK_ARM_POSE = "lap"  # applies to every arm

ARM_POSE_RULES = """\
arm-pose families (--arm-poses, --valid-arm-poses):
  wheel   hand on the steering wheel's rim   the driver only
  lap     hand on the thigh                  every arm
  raised  forearm up beside the head         every arm
  phone   hand at the ear                    every arm, one hand per person
  cross   hand on the other shoulder         every arm
  reach   hand towards the centre console    front row, the arm nearer the car's middle
  window  elbow out on the door              front row, the door-side arm
Each arm draws one family among the allowed ones that apply to it: front-row arms with
relative weights wheel 3, lap 2, raised 0.7, phone 0.6, cross 0.8, reach 0.8, window 0.8;
back-row arms lap 2, raised 1, phone 1, cross 1. A family that does not apply to an arm is
never drawn for it. One hand holds the phone: when the right arm has drawn 'phone', a left arm
drawing 'phone' goes to the lap instead. 'lap' applies to every arm, so a list without 'lap'
must give every kind of arm (driver, front passenger, back row; door side and inner) an
applicable family and must leave out 'phone' (e.g. raised,cross); any other list is refused
at start-up (exit code 2). The driver's hands keep their 'wheel' pose in the frames (about
15%) that do not show the wheel.
"""

# Relative weights of a front-row arm's draw; their order is the order of the draw's outcomes.
_FRONT_ROW_WEIGHTS = {"wheel": 3.0, "lap": 2.0, "raised": 0.7, "phone": 0.6, "cross": 0.8, "reach": 0.8,
                      "window": 0.8}
# A back-row arm draws one of these evenly (lap twice as often as the others).
_BACK_ROW_DRAWS = ("lap", "lap", "raised", "phone", "cross")


def applicable_arm_poses(row: str, has_wheel: bool, is_outboard: bool) -> frozenset[str]:
    """Families that apply to one arm: `row` "front" or "back"; `has_wheel` for the driver's
    arms; `is_outboard` for the door-side arm."""
    if row == "back":
        return frozenset(_BACK_ROW_DRAWS)
    excluded = {"reach" if is_outboard else "window"}
    if not has_wheel:
        excluded.add("wheel")
    return ALL_ARM_POSES - excluded


# Every kind of arm the generator seats, for the start-up check of a restriction.
_ARM_KINDS: dict[str, frozenset[str]] = {
    "the driver's door-side arm": applicable_arm_poses("front", True, True),
    "the driver's inner arm": applicable_arm_poses("front", True, False),
    "the front passenger's door-side arm": applicable_arm_poses("front", False, True),
    "the front passenger's inner arm": applicable_arm_poses("front", False, False),
    "a back-row passenger's arm": applicable_arm_poses("back", False, False),
}


def format_arm_poses(allowed: Iterable[str]) -> str:
    """Family names in ARM_POSE_FAMILIES order, joined by commas (the --arm-poses syntax)."""
    allowed = set(allowed)
    return ",".join(family for family in ARM_POSE_FAMILIES if family in allowed)


def check_arm_poses(families: Iterable[str] | None) -> frozenset[str]:
    """The allowed set for `families` (None: all of them); ValueError (one line) for an unknown
    name, an empty set, or a set that leaves some arm without a family (see the module rules)."""
    if families is None:
        return ALL_ARM_POSES
    if isinstance(families, str):
        raise ValueError(f"give arm-pose families as a collection of names, not the string {families!r}")
    allowed = frozenset(families)
    unknown = sorted(allowed - ALL_ARM_POSES)
    if unknown:
        raise ValueError(f"unknown arm-pose famil{'ies' if len(unknown) > 1 else 'y'} {', '.join(unknown)} "
                         f"(choose from {','.join(ARM_POSE_FAMILIES)})")
    if not allowed:
        raise ValueError(f"no arm-pose family given (choose from {','.join(ARM_POSE_FAMILIES)})")
    if FALLBACK_ARM_POSE in allowed:
        return allowed
    for arm, applicable in _ARM_KINDS.items():
        if not allowed & applicable:
            raise ValueError(f"{format_arm_poses(allowed)}: no family applies to {arm} "
                             f"(add '{FALLBACK_ARM_POSE}', which applies to every arm)")
    if "phone" in allowed:
        raise ValueError(f"{format_arm_poses(allowed)}: 'phone' needs '{FALLBACK_ARM_POSE}' too (one hand "
                         f"holds the phone, a second hand drawing 'phone' goes to the lap)")
    return allowed


def parse_arm_poses(text: str) -> frozenset[str]:
    """'wheel,lap' -> the checked set (see check_arm_poses); ValueError for a bad list."""
    names = [name.strip() for name in text.split(",")]
    if any(not name for name in names):
        raise ValueError(f"empty family name in {text!r} (write FAMILY[,FAMILY...])")
    return check_arm_poses(names)


def choose_arm_poses(row: str, has_wheel: bool, outboard: int, allowed: frozenset[str],
                     rng: np.random.Generator) -> tuple[str, str]:
    """(right arm, left arm) families for one person, drawn from the allowed families that apply.

    `outboard` +1: the left arm is on the door side, -1: the right arm. `allowed` must have
    passed check_arm_poses. A front-row arm takes one uniform draw from `rng` whatever `allowed`
    is, so a restriction changes no later draw of a front-row-only frame whose arms drew allowed
    families anyway; a back row's shorter list may take a different number of draws.
    """
    poses: list[str] = []
    for side in (-1, 1):
        applicable = applicable_arm_poses(row, has_wheel, side == outboard)
        if row == "back":
            choice = rng.choice([family for family in _BACK_ROW_DRAWS if family in allowed])
        else:
            names = list(_FRONT_ROW_WEIGHTS)
            weights = np.array([_FRONT_ROW_WEIGHTS[n] if n in applicable and n in allowed else 0.0
                                for n in names])
            choice = names[rng.choice(len(names), p=weights / weights.sum())]
        if choice == "phone" and "phone" in poses:
            choice = FALLBACK_ARM_POSE
        poses.append(str(choice))
    return poses[0], poses[1]


def _clamp_length(origin: Point, target: Point, max_length: float) -> Point:
    """`target`, moved towards `origin` if needed so that it is at most `max_length` away."""
    offset = target - origin
    length = float(np.hypot(*offset))
    return target if length <= max_length else origin + offset * (max_length / length)


def arm_targets(pose: str, side: int, person_kp: np.ndarray, torso: float, head_center: Point,
                head_axes: np.ndarray, wheel: dict | None, center_x: float, rng: np.random.Generator
                ) -> tuple[Point, Point]:
    """Elbow and wrist (2,) in scene pixels for one arm in family `pose`.

    side -1 = the person's right arm (image left); person_kp (9, 2) with the shoulders and hips
    set; torso: neck-to-hip height in scene pixels; wheel: {"center": (2,), "axes": (2,)} for
    the driver, else None; center_x: where a "reach" goes. Upper arm and forearm keep their
    lengths or appear shorter (pointing towards the camera).
    """
    shoulder = person_kp[RIGHT_SHOULDER if side < 0 else LEFT_SHOULDER]
    hip = person_kp[RIGHT_HIP if side < 0 else LEFT_HIP]
    other_shoulder = person_kp[LEFT_SHOULDER if side < 0 else RIGHT_SHOULDER]
    t = torso

    if pose == "wheel":
        if wheel is None:
            raise ValueError("arm pose 'wheel' without a steering wheel")
        angle = np.radians(rng.uniform(15, 75))
        on_rim = wheel["center"] + np.array([side * wheel["axes"][0] * np.cos(angle),
                                             -wheel["axes"][1] * np.sin(angle)])
        wrist = on_rim + np.array([0.0, rng.uniform(-0.03, 0.05) * t])
        elbow = shoulder + np.array([side * rng.uniform(0.12, 0.3), rng.uniform(0.4, 0.55)]) * t
    elif pose == "lap":
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
    elif pose == "window":  # the door-side arm rests on the door, the elbow out towards the window
        elbow = shoulder + np.array([side * rng.uniform(0.35, 0.6), rng.uniform(0.2, 0.45)]) * t
        wrist = elbow + np.array([-side * rng.uniform(0.0, 0.2), rng.uniform(-0.45, 0.3)]) * t
    else:
        raise ValueError(f"unknown arm pose {pose!r}")
    upper, fore = 0.62 * t, 0.58 * t  # longest projected lengths; shorter = towards the camera
    elbow = _clamp_length(shoulder, elbow + rng.normal(0, 0.03 * t, 2), upper)
    wrist = _clamp_length(elbow, wrist + rng.normal(0, 0.03 * t, 2), fore)
    return elbow, wrist
