"""Pose conventions of the seed: the 9 keypoints and the 8 limbs, in the order it trained with.

Every other module names keypoints and limbs through these constants instead of literal
indices. Coordinates everywhere are (x, y) in pixels of the network input.
"""

from __future__ import annotations

KEYPOINT_NAMES: tuple[str, ...] = (
    "right_wrist",
    "right_elbow",
    "right_shoulder",
    "neck",
    "left_shoulder",
    "left_elbow",
    "left_wrist",
    "right_hip",
    "left_hip",
)
NUM_KEYPOINTS = len(KEYPOINT_NAMES)

RIGHT_WRIST, RIGHT_ELBOW, RIGHT_SHOULDER, NECK, LEFT_SHOULDER, LEFT_ELBOW, LEFT_WRIST, RIGHT_HIP, LEFT_HIP = range(
    NUM_KEYPOINTS
)

# (from, to) per limb; PAF k occupies channels 2k (x component) and 2k + 1 (y component).
LIMBS: tuple[tuple[int, int], ...] = (
    (NECK, RIGHT_SHOULDER),
    (RIGHT_SHOULDER, RIGHT_ELBOW),
    (RIGHT_ELBOW, RIGHT_WRIST),
    (NECK, LEFT_SHOULDER),
    (LEFT_SHOULDER, LEFT_ELBOW),
    (LEFT_ELBOW, LEFT_WRIST),
    (NECK, RIGHT_HIP),
    (NECK, LEFT_HIP),
)
LIMB_NAMES: tuple[str, ...] = tuple(f"{KEYPOINT_NAMES[a]}->{KEYPOINT_NAMES[b]}" for a, b in LIMBS)
NUM_LIMBS = len(LIMBS)
NUM_PAF_CHANNELS = 2 * NUM_LIMBS

# The arms, per side: (shoulder, elbow, wrist).
ARMS: tuple[tuple[int, int, int], ...] = (
    (RIGHT_SHOULDER, RIGHT_ELBOW, RIGHT_WRIST),
    (LEFT_SHOULDER, LEFT_ELBOW, LEFT_WRIST),
)
HIPS: tuple[int, int] = (RIGHT_HIP, LEFT_HIP)

# Channels of the generator's input: 9 heatmaps (never a background channel),
# 16 PAF channels and the seatbelt mask.
SEMANTIC_CHANNELS = NUM_KEYPOINTS + NUM_PAF_CHANNELS + 1

# The seed's geometry was fixed at 384 x 384 input; lengths given in input pixels at
# that size scale linearly with the input size.
REFERENCE_IMAGE_SIZE = 384
HEATMAP_SIGMA = 7.0  # input pixels at 384
FRONT_ROW_TORSO_HEIGHT = 70.0  # input pixels at 384
OUTPUT_STRIDE = 4  # NADS-Net's heatmaps and PAFs are at 1/4 of the input size


def scale_for(image_size: int) -> float:
    """Factor that converts lengths given at the seed's 384 px input to `image_size` px."""
    return image_size / REFERENCE_IMAGE_SIZE


def check_image_size(image_size: int) -> int:
    """Return `image_size` if it is a positive multiple of 32, else raise ValueError."""
    if image_size <= 0 or image_size % 32:
        raise ValueError(f"image size must be a positive multiple of 32, got {image_size}")
    return image_size
