"""A whole frame: seat the people, paint the scene back to front, look at it through the camera.

Every random draw comes from the frame's own generator, in a fixed order; the helpers below
are called in that order, so moving a draw from one to another changes every frame after it
(tests/test_synthetic.py compares frames with the committed data_sample/).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

from common.posedata.pose import ARMS, FRONT_ROW_TORSO_HEIGHT
from common.synthetic.arms import check_arm_poses
from common.synthetic.cabin import (
    draw_cabin,
    draw_console,
    draw_dashboard,
    draw_front_seat,
    draw_wheel,
    fabric_texture,
    outdoor_scene,
)
from common.synthetic.camera import camera_transform, finish, keypoint_visibility
from common.synthetic.colours import clothing_colour, vary
from common.synthetic.layout import DEFAULT_HEIGHT, DEFAULT_WIDTH, SPLITS
from common.synthetic.painter import Painter
from common.synthetic.people import Person, draw_arm, draw_belt, draw_body, draw_fingers, make_person, torso_height_384

# The family an arm is recorded under when render_frame moved its elbow or wrist.
CHANGED_ARM_POSE = "changed"
# An arm override's rows, per person: right elbow, right wrist, left elbow, left wrist.
ARM_OVERRIDE_JOINTS = tuple(joint for _, elbow, wrist in ARMS for joint in (elbow, wrist))

# Back-row torsos stay this far below the front-row threshold at the 384 px input.
BACK_ROW_MAX_TORSO_384 = 0.92 * FRONT_ROW_TORSO_HEIGHT


@dataclass
class Frame:
    """One rendered frame. image (H, W, 3) BGR or (H, W) grey uint8; seatbelt_mask (H, W) uint8 {0, 255};
    keypoints (P, 9, 3) float64 (x, y, v) in image pixels, missing as (0, 0, 0); the lists hold
    one entry per person, in the order of `keypoints`."""

    image_id: str
    image: np.ndarray
    seatbelt_mask: np.ndarray
    keypoints: np.ndarray
    rows: list[str]  # "front" / "back" per person
    belted: list[bool]  # per person: wears a seatbelt (its visible pixels are in seatbelt_mask)
    wheel_annotation: bool  # also write a non-Person "Steering_Wheel" annotation
    arm_poses: list[tuple[str, str]]  # per person: (right arm, left arm) families (common.synthetic.arms)


@dataclass
class _FrontRow:
    """Where the front row sits, in scene pixels; the wheel is in front of the driver."""

    left_hand_drive: bool  # driver on the image's right
    driver_x: float
    passenger_x: float
    wheel: dict  # {"center": (2,), "axes": (2,) semi-axes}


def _palette(width: int, height: int, rng: np.random.Generator) -> dict:
    """The cabin's colours, BGR float32 (3,), and the seats' fabric texture (H, W, 3)."""
    seat = clothing_colour(rng) * np.float32(0.6)
    palette = {
        "interior": vary(np.full(3, rng.uniform(40, 110), np.float32), rng, 0.08),
        "seat": seat,
        "roof": vary(np.full(3, rng.uniform(120, 200), np.float32) * [0.92, 1.0, 1.05], rng, 0.05),
        "trim": vary(np.full(3, rng.uniform(35, 120), np.float32), rng, 0.08),
        "dash": vary(np.full(3, rng.uniform(20, 60), np.float32), rng, 0.1),
    }
    palette["seat_texture"] = palette["seat"] * fabric_texture(width, height, rng)[..., None]
    return palette


def _front_row(width: int, height: int, rng: np.random.Generator) -> _FrontRow:
    """Left-hand drive three times in four; seats near 28% and 72% of the width."""
    W, H = float(width), float(height)
    left_hand_drive = bool(rng.random() < 0.75)
    driver_x = (0.72 if left_hand_drive else 0.28) * W + rng.normal(0, 0.015 * W)
    passenger_x = (0.28 if left_hand_drive else 0.72) * W + rng.normal(0, 0.015 * W)
    wheel = {"center": np.array([driver_x + rng.normal(0, 0.02 * W), rng.uniform(1.0, 1.1) * H]),
             "axes": np.array([rng.uniform(0.3, 0.36), rng.uniform(0.2, 0.26)]) * H}
    return _FrontRow(left_hand_drive, driver_x, passenger_x, wheel)


def _seat_people(p: Painter, seats: _FrontRow, allowed_arm_poses: frozenset[str], rng: np.random.Generator
                 ) -> list[Person]:
    """The driver, often a front passenger, sometimes a back-row passenger (listed first)."""
    W, H = float(p.width), float(p.height)
    people: list[Person] = []
    front_torso = 0.4 * H
    people.append(make_person("front", seats.driver_x + rng.normal(0, 0.01 * W), rng.uniform(0.34, 0.4) * H,
                              front_torso * rng.uniform(0.9, 1.06), 1 if seats.left_hand_drive else -1, True,
                              seats.wheel, 0.5 * W, allowed_arm_poses, rng))
    if rng.random() < 0.6:
        people.append(make_person("front", seats.passenger_x + rng.normal(0, 0.01 * W), rng.uniform(0.34, 0.4) * H,
                                  front_torso * rng.uniform(0.88, 1.04), -1 if seats.left_hand_drive else 1, False,
                                  None, 0.5 * W, allowed_arm_poses, rng))
    if rng.random() < 0.35:  # a smaller passenger in the back row, seen between the front seats
        back_x = 0.5 * W + rng.uniform(-0.05, 0.05) * W
        neck_y, torso, outboard = rng.uniform(0.34, 0.38) * H, rng.uniform(0.12, 0.15) * H, int(rng.choice([-1, 1]))
        for _ in range(4):  # shrink until the torso is clearly below the arm augmentation's front-row threshold
            back_person = make_person("back", back_x, neck_y, torso, outboard, False, None, back_x,
                                      allowed_arm_poses, rng)
            height_384 = torso_height_384(p.to_pixels(back_person.keypoints), p.width, p.height)
            if height_384 < BACK_ROW_MAX_TORSO_384:
                break
            torso *= 0.95 * BACK_ROW_MAX_TORSO_384 / height_384
        else:
            raise RuntimeError(f"back-row torso stays at {height_384:.1f} px for a {p.width}x{p.height} frame")
        people.insert(0, back_person)
    return people


def _override_arms(p: Painter, people: list[Person], overrides: dict[int, np.ndarray]) -> None:
    """Move elbows and wrists to the given image pixels, after every draw that placed them.

    overrides: person index -> (4, 2) image pixels in ARM_OVERRIDE_JOINTS order, NaN = keep.
    An arm with a moved joint is recorded as CHANGED_ARM_POSE (so a hand moved off the wheel
    gets no fingers on the rim)."""
    to_scene = np.linalg.inv(p.camera[:, :2])
    for index, pixels in overrides.items():
        if not 0 <= index < len(people):
            raise ValueError(f"arm override for person {index}, the frame has {len(people)}")
        pixels = np.asarray(pixels, np.float64).reshape(len(ARM_OVERRIDE_JOINTS), 2)
        person = people[index]
        poses = list(person.arm_poses)
        for row, joint in enumerate(ARM_OVERRIDE_JOINTS):
            if np.isfinite(pixels[row]).all():
                person.keypoints[joint] = to_scene @ (pixels[row] - p.camera[:, 2])
                poses[row // 2] = CHANGED_ARM_POSE
        person.arm_poses = (poses[0], poses[1])


def _paint_scene(p: Painter, people: list[Person], seats: _FrontRow, palette: dict, exterior: np.ndarray,
                 rng: np.random.Generator) -> tuple[list[int], bool]:
    """Paint back to front; returns the belts' part ids and whether the wheel is shown."""
    H = p.height
    draw_cabin(p, rng, palette, exterior)
    belt_ids: list[int] = []
    back = [i for i, q in enumerate(people) if q.row == "back"]
    front = [i for i, q in enumerate(people) if q.row == "front"]
    for i in back:  # the back-row passenger is drawn before the front seats hide parts of them
        draw_body(p, people[i], i, rng)
        if people[i].belted:
            draw_belt(p, people[i], i, belt_ids)
        for side in (-1, 1):
            draw_arm(p, people[i], i, side)
    for cx in (seats.driver_x, seats.passenger_x):  # occupied or not; in front of the back-row passenger
        draw_front_seat(p, cx, rng.uniform(0.27, 0.31) * H, rng.uniform(0.02, 0.05) * H, palette)
    draw_console(p, 0.5 * (seats.driver_x + seats.passenger_x), rng.uniform(0.56, 0.64) * H, palette)
    for i in front:
        draw_body(p, people[i], i, rng)
    for i in front:
        if people[i].belted:
            draw_belt(p, people[i], i, belt_ids)
    arms = [(i, side) for i in front for side in (-1, 1)]
    for j in rng.permutation(len(arms)):  # front-row arms cross each other in any order
        draw_arm(p, people[arms[j][0]], arms[j][0], arms[j][1])
    show_wheel = bool(rng.random() < 0.85)
    if show_wheel:
        draw_wheel(p, seats.wheel, palette["dash"] * 0.9)
        driver_index = front[0]
        for side, pose in zip((-1, 1), people[driver_index].arm_poses):
            if pose == "wheel":
                draw_fingers(p, people[driver_index], driver_index, side, seats.wheel)
    draw_dashboard(p, rng, palette)
    return belt_ids, show_wheel


def render_frame(seed: int, split_index: int, frame_index: int, width: int = DEFAULT_WIDTH,
                 height: int = DEFAULT_HEIGHT, arm_poses: Iterable[str] | None = None,
                 arm_overrides: dict[int, np.ndarray] | None = None) -> Frame:
    """Draw frame `frame_index` of split `split_index` (0 train, 1 valid); the same arguments
    always give the same frame.

    seed, split_index, frame_index: non-negative ints, the frame's generator is
    np.random.default_rng([seed, split_index, frame_index]). width, height: pixels.
    arm_poses: the arm-pose families people may draw (common.synthetic.arms: ARM_POSE_FAMILIES
    and the rules for a restriction); None = all, which gives the frames drawn before the
    restriction existed. ValueError for unknown names or a set that leaves an arm without a pose.
    arm_overrides: {person index: (4, 2) image pixels of the right elbow, right wrist, left
    elbow and left wrist, NaN = keep}: the same frame (every draw is made as without it) with
    those joints moved, and the arms, visibility and seatbelt mask drawn for them; a changed
    arm's family is CHANGED_ARM_POSE.
    """
    allowed_arm_poses = check_arm_poses(arm_poses)
    rng = np.random.default_rng([seed, split_index, frame_index])
    camera, zoom = camera_transform(width, height, rng)
    p = Painter(width, height, camera, zoom)
    nir = bool(rng.random() < 0.25)  # a near-infrared (grey) camera
    night = nir and bool(rng.random() < 0.5)
    palette = _palette(width, height, rng)
    seats = _front_row(width, height, rng)
    exterior = outdoor_scene(width, height, rng, night)
    people = _seat_people(p, seats, allowed_arm_poses, rng)
    if arm_overrides:
        _override_arms(p, people, arm_overrides)
    belt_ids, show_wheel = _paint_scene(p, people, seats, palette, exterior, rng)

    keypoints = keypoint_visibility(p, people)
    seatbelt = np.where(np.isin(p.owner, belt_ids), 255, 0).astype(np.uint8)
    image = finish(p.image, rng, nir)
    if nir and rng.random() < 0.5:
        image = np.repeat(image[..., None], 3, axis=2)  # grey stored as 3 channels
    split = SPLITS[split_index][0]
    wheel_annotation = show_wheel and bool(rng.random() < 0.3)
    return Frame(f"{split}/frame_{frame_index:06d}", image, seatbelt, keypoints, [q.row for q in people],
                 [q.belted for q in people], wheel_annotation, [q.arm_poses for q in people])
