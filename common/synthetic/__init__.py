"""Procedural in-vehicle camera frames in the seed's data layout and annotation format.

The seed's data set is proprietary; this package draws stand-in frames so that every part of
the project (data loading, label maps, both trainings, evaluation) can run end to end and
learn something real. The camera sits on the dashboard and looks back at the front row, so a
person's right side appears on the image's left.

    python -m common.synthetic --out DIR --train N --valid M --seed S [--width W --height H]
        [--valid-seed S2] [--arm-poses FAMILY[,FAMILY...]] [--valid-arm-poses FAMILY[,...]]

writes:
    DIR/Raw_Images/<image_id>.png        colour (BGR) or grey (3 equal channels or 1 channel)
    DIR/Seatbelt_Mask/<image_id>.png     3 equal channels, 255 on visible belt pixels, 0 elsewhere
    DIR/Train_keypoint_Annotation_sample.json
    DIR/Valid_keypoint_Annotation_sample.json
    DIR/synthetic_set.json               how each split was drawn (seed, arm-pose families, frames; size)
with image ids "train/frame_000012" and "valid/frame_000003". Each JSON holds
{"annotations": [{"image_id": ..., "label": "Person", "keypoints": [x, y, v] * 9}, ...]},
one annotation per person (with two fields the seed's format does not have and loaders ignore:
"row", "front" or "back", and "arm_poses", the [right arm, left arm] families), x and y in
source pixels; v = 2 visible, 1 occluded (by the other
person, the wheel, the dashboard, a seat or the person's own arm), 0 outside the frame with
x = y = 0. Some frames also carry a "Steering_Wheel" annotation (27 zeros) that loaders must
skip.

Every frame draws its randomness from np.random.default_rng([seed, split_index, frame_index]),
so a frame does not depend on how many frames are written: the first K frames of a run with
N > K frames are the frames of a run with K frames. Pixels are composed with elementwise float
arithmetic, OpenCV's fixed-point drawing and its bit-exact 8-bit filters only, so that other
machines compute the same pixels (the PNG bytes also depend on the zlib build).

Modules, by concern:
    layout    folder and file names of the seed's layout, default frame size
    painter   Painter: anti-aliased shapes plus the map of which part owns each pixel
    colours   skin, hair, clothing and cabin colour draws
    arms      arm-pose families, their rules under a restriction, elbow and wrist targets
    people    Person, seating one (make_person), drawing bodies, belts, arms, fingers
    cabin     windows' outdoor scene, cabin, seats, console, wheel, dashboard
    camera    camera placement, keypoint visibility, lighting / optics / sensor noise
    frame     render_frame -> Frame: one whole frame
    files     write_dataset: both splits as PNG files and annotation JSON
    cli       the command line (python -m common.synthetic)
    cache     ensure_synthetic_dataset: build a set once under .cache/synthetic/ and reuse it
    oracle    write_oracle_pool: a set's own frames re-rendered in changed arm poses (the perfect generator)
"""

from common.synthetic.arms import ARM_POSE_FAMILIES, check_arm_poses, parse_arm_poses
from common.synthetic.cache import DEFAULT_CACHE_ROOT, ensure_synthetic_dataset
from common.synthetic.cli import main
from common.synthetic.files import write_annotation_file, write_dataset
from common.synthetic.frame import Frame, render_frame
from common.synthetic.layout import DEFAULT_HEIGHT, DEFAULT_WIDTH, RAW_IMAGES_DIR, SEATBELT_MASK_DIR, SPLITS
from common.synthetic.people import Person, torso_height_384

__all__ = [
    "ARM_POSE_FAMILIES",
    "DEFAULT_CACHE_ROOT",
    "DEFAULT_HEIGHT",
    "DEFAULT_WIDTH",
    "Frame",
    "Person",
    "RAW_IMAGES_DIR",
    "SEATBELT_MASK_DIR",
    "SPLITS",
    "check_arm_poses",
    "ensure_synthetic_dataset",
    "main",
    "parse_arm_poses",
    "render_frame",
    "torso_height_384",
    "write_annotation_file",
    "write_dataset",
]
