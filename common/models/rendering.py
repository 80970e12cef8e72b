"""Frames rendered by a trained SPADE generator in given poses, the generator left unchanged.

One renderer serves NADS-Net's training batches (nadsnet_pvt.batch), generate.py
(gan.generation), the GAN's faithfulness measurement (gan.faithfulness) and the study's pose
pictures, so all of them see the same frames for the same pose.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import nn

from common.parallel.devices import autocast_context
from common.posedata.imaging import gan_to_imagenet, resize_images
from common.posedata.maps import OCCLUDED_JOINTS, gan_input
from common.models.normalization import convert_batch_norms_for_distributed, frozen_norm_statistics


class GeneratedSamples:
    """Renders frames in given poses with a trained SPADE generator, leaving the generator unchanged.

    Args:
        generator: SPADEGenerator (moved to `device`); its parameters are frozen here.
        device: the generator's device.
        image_range: 'converted' (outputs become ImageNet-normalised) or 'seed' (kept in [-1, 1],
            as the seed fed them to NADS-Net): train_nadsnet.py's own --image-range, never taken
            from the generator's file.
        eval_mode: True -> eval mode (running statistics); False -> batch statistics with the
            stored statistics untouched.
        amp: 'off' | 'bf16' | 'fp16' autocast for the generator.
        occluded_joints: how the generator's input shows occluded joints, as it was trained
            (common.posedata.maps.OCCLUDED_JOINTS; `occluded_joints_of` reads it off its configuration).
    """

    def __init__(
        self,
        generator: nn.Module,
        device: torch.device | str,
        image_range: str = "converted",
        eval_mode: bool = False,
        amp: str = "off",
        occluded_joints: str = "drawn",
    ):
        if image_range not in ("converted", "seed"):
            raise ValueError(f"image_range must be 'converted' or 'seed', got {image_range!r}")
        if occluded_joints not in OCCLUDED_JOINTS:
            raise ValueError(f"occluded_joints must be one of {OCCLUDED_JOINTS}, got {occluded_joints!r}")
        self.device = torch.device(device)
        self.generator = generator.to(self.device)
        for parameter in self.generator.parameters():
            parameter.requires_grad_(False)
        self.generator.train(not eval_mode)
        self.image_range = image_range
        self.eval_mode = eval_mode
        self.amp = amp
        self.occluded_joints = occluded_joints

    def distribute(self, job) -> None:
        """In a distributed job the generator's batch norms gather their statistics over the
        generated samples of every process (the global batch's), as one process's would."""
        if job.distributed and not self.eval_mode:
            convert_batch_norms_for_distributed(self.generator, job.backend)

    @torch.no_grad()
    def render(self, keypoints: torch.Tensor, seatbelt: torch.Tensor, image_size: int,
               occluded: torch.Tensor | None = None) -> torch.Tensor:
        """keypoints (n, P, 9, 2) input pixels of an S x S input, seatbelt (n, 1, S, S) -> images
        (n, 3, S, S) float32 on the generator's device, ImageNet-normalised (or [-1, 1] for
        'seed'). A generator trained at another size G renders the pose and belt scaled to G,
        and its frames are resized to S (the cpu preset: a 64 px GAN for a 128 px NADS-Net).
        occluded: bool (n, P, 9), the joints labelled occluded; a generator trained with
        occluded joints 'omitted' needs it (gan_input)."""
        size = self.generator.crop_size
        keypoints, seatbelt = keypoints.to(self.device), seatbelt.to(self.device)
        if size != image_size:
            keypoints = keypoints * (size / image_size)
            seatbelt = (torch.nn.functional.interpolate(seatbelt, size=(size, size), mode="area") > 0.5).float()
        semantics = gan_input(keypoints, seatbelt, size, occluded, self.occluded_joints)
        statistics = nullcontext() if self.eval_mode else frozen_norm_statistics(self.generator)
        with statistics, autocast_context(self.device, self.amp):
            fake = resize_images(self.generator(semantics).float(), image_size)
        return gan_to_imagenet(fake) if self.image_range == "converted" else fake


def occluded_joints_of(config: dict) -> str:
    """How a generator's input showed occluded joints in training, from its configuration (the
    JSON beside its weights): 'drawn' for a file without the entry (older runs, the seed's)."""
    return config.get("occluded_joints", "drawn")
