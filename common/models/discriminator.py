"""Multi-scale PatchGAN discriminator, with SPADE's module names.

Keys: discriminator_<scale>.model<layer>...; the normalised layers are
`model<n>.0` = Sequential(spectral-norm conv (weight_orig/_u/_v, no bias), InstanceNorm2d),
`model<n>.1` = LeakyReLU, so the seed's checkpoints load with strict=True.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm

KERNEL_SIZE = 4
PADDING = math.ceil((KERNEL_SIZE - 1) / 2)  # 2, as in pix2pixHD / SPADE
MAX_CHANNELS = 512
LEAKY_SLOPE = 0.2


class NLayerDiscriminator(nn.Module):
    """PatchGAN with `n_layers` strided stages, returning every layer's output.

    model0: conv(input_nc -> ndf, stride 2) + lReLU (no norm)
    model1..model{n_layers-1}: spectral-norm conv (no bias, channels doubling, capped at 512;
        stride 2, the last one stride 1) + InstanceNorm2d(affine=False) + lReLU
    model{n_layers}: conv(-> 1, stride 1), the patch prediction (logits)
    All convolutions: kernel 4, padding 2.
    """

    def __init__(self, input_nc: int = 29, ndf: int = 64, n_layers: int = 4) -> None:
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        stages: list[list[nn.Module]] = [
            [
                nn.Conv2d(input_nc, ndf, KERNEL_SIZE, stride=2, padding=PADDING),
                nn.LeakyReLU(LEAKY_SLOPE),
            ]
        ]
        nf = ndf
        for n in range(1, n_layers):
            nf_prev, nf = nf, min(nf * 2, MAX_CHANNELS)
            stride = 1 if n == n_layers - 1 else 2
            conv = spectral_norm(
                nn.Conv2d(nf_prev, nf, KERNEL_SIZE, stride=stride, padding=PADDING, bias=False)
            )
            stages.append(
                [nn.Sequential(conv, nn.InstanceNorm2d(nf, affine=False)), nn.LeakyReLU(LEAKY_SLOPE)]
            )
        stages.append([nn.Conv2d(nf, 1, KERNEL_SIZE, stride=1, padding=PADDING)])
        for index, stage in enumerate(stages):
            self.add_module(f"model{index}", nn.Sequential(*stage))
        self.num_stages = len(stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x (B, input_nc, H, W) -> list of n_layers + 1 feature maps; the last is the
        prediction (B, 1, h, w) of logits, h a little over H / 2**(n_layers - 1) because of the
        padding (51 for H = 384 with n_layers = 4)."""
        outputs = []
        for index in range(self.num_stages):
            x = getattr(self, f"model{index}")(x)
            outputs.append(x)
        return outputs


class MultiscaleDiscriminator(nn.Module):
    """`num_D` PatchGANs; scale i sees the input average-pooled i times (3x3, stride 2, pad 1,
    count_include_pad False). Input = 26 semantic channels + 3 image channels = 29."""

    def __init__(self, input_nc: int = 29, ndf: int = 64, n_layers: int = 4, num_D: int = 2) -> None:
        super().__init__()
        if num_D < 1:
            raise ValueError(f"num_D must be >= 1, got {num_D}")
        self.num_D = num_D
        for index in range(num_D):
            self.add_module(f"discriminator_{index}", NLayerDiscriminator(input_nc, ndf, n_layers))

    @staticmethod
    def downsample(x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, ceil(H/2), ceil(W/2)), the input of the next scale."""
        return F.avg_pool2d(x, kernel_size=3, stride=2, padding=1, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        """x (B, input_nc, H, W) -> per scale (finest first), the list of every layer's output
        (for feature matching); the last element of each list is that scale's prediction."""
        results = []
        for index in range(self.num_D):
            results.append(getattr(self, f"discriminator_{index}")(x))
            if index + 1 < self.num_D:
                x = self.downsample(x)
        return results
