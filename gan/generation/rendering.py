"""Frames from poses with a trained generator: batches of poses and belts in, uint8 RGB frames out.

The generator runs through `common.models.rendering.GeneratedSamples` (the same rendering NADS-Net's
training uses: the 26-channel input on the generator's device, no autograd, the generator left
unchanged) with image_range 'seed', i.e. its [-1, 1] output unconverted, which
`common.posedata.imaging.gan_to_uint8` maps to pixels by (v + 1) / 2 * 255, as the seed saved its pictures.

Eval mode (the default) normalises with the stored running statistics, so a frame depends only
on its own pose and belt: on the CPU the bytes are the same whatever the batch size. With
`batch_statistics` the generator normalises each batch with that batch's statistics, as it did
while training: a frame then depends on the other frames of its batch.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np
import torch

from common.posedata.imaging import gan_to_uint8
from common.posedata.pose import NUM_KEYPOINTS
from common.models.rendering import GeneratedSamples


def pad_people(poses: Sequence[np.ndarray], fill=np.nan, dtype=np.float32) -> np.ndarray:
    """Per-frame arrays (P_i, 9, ...) -> (n, max P_i, 9, ...) of `dtype`, padded with `fill` people:
    poses float32 (P_i, 9, 2) padded with NaN (the defaults), flags bool (P_i, 9) with False."""
    most = max((len(people) for people in poses), default=0)
    trailing = np.shape(poses[0])[2:] if len(poses) else (2,)
    padded = np.full((len(poses), most, NUM_KEYPOINTS, *trailing), fill, dtype=dtype)
    for row, people in enumerate(poses):
        padded[row, : len(people)] = people
    return padded


class FrameRenderer:
    """Renders S x S frames with a trained SPADE generator.

    Args:
        generator: the SPADEGenerator (common.models.factory.load_generator); its weights and
            stored statistics are never changed.
        image_size: S, the generator's crop size.
        device: where it runs.
        batch_statistics: False -> eval mode (stored running statistics); True -> each batch's own.
        amp: 'off' | 'bf16' | 'fp16' autocast.
        occluded_joints: how its input shows occluded joints (common.posedata.maps.OCCLUDED_JOINTS).
    """

    def __init__(self, generator: torch.nn.Module, image_size: int, device: torch.device | str,
                 batch_statistics: bool = False, amp: str = "off", occluded_joints: str = "drawn"):
        self.image_size = image_size
        self.samples = GeneratedSamples(generator, device, image_range="seed", eval_mode=not batch_statistics, amp=amp,
                                        occluded_joints=occluded_joints)

    def render(self, poses: Sequence[np.ndarray], belts: np.ndarray,
               occluded: Sequence[np.ndarray] | None = None) -> list[np.ndarray]:
        """poses: n arrays (P, 9, 2) input pixels, NaN = missing; belts: float32 (n, 1, S, S) in {0, 1};
        occluded: n bool arrays (P, 9), the joints labelled occluded (or None).
        Returns n uint8 (S, S, 3) RGB frames."""
        keypoints = torch.from_numpy(pad_people(poses))
        hidden = None if occluded is None else torch.from_numpy(pad_people(occluded, False, bool))
        fake = self.samples.render(keypoints, torch.from_numpy(np.ascontiguousarray(belts)), self.image_size,
                                   hidden).cpu()
        return [gan_to_uint8(image) for image in fake]


def to_frame_size(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    """An S x S frame (uint8 (S, S, 3)) stretched back to width x height (the inverse of the
    data loader's stretch): area averaging where both sides shrink, bicubic otherwise."""
    size_y, size_x = frame.shape[:2]
    if (width, height) == (size_x, size_y):
        return frame
    shrinking = width <= size_x and height <= size_y
    return cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)
