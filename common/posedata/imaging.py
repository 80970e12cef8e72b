"""Image value ranges and the conversions between them.

Two conventions meet in this project:
- GAN range: RGB in [-1, 1], i.e. (v / 255 - 0.5) / 0.5, the generator's tanh range.
- ImageNet normalisation: (v / 255 - mean) / std per RGB channel, what NADS-Net and VGG expect.
Tensors are (B, 3, H, W) or (3, H, W), RGB, float.
"""

from __future__ import annotations

import numpy as np
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _channel_stats(like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    shape = (3, 1, 1) if like.dim() == 3 else (1, 3, 1, 1)
    mean = torch.tensor(IMAGENET_MEAN, dtype=like.dtype, device=like.device).view(shape)
    std = torch.tensor(IMAGENET_STD, dtype=like.dtype, device=like.device).view(shape)
    return mean, std


def gan_to_imagenet(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] RGB -> ImageNet-normalised RGB."""
    mean, std = _channel_stats(images)
    return ((images + 1.0) * 0.5 - mean) / std


def imagenet_to_gan(images: torch.Tensor) -> torch.Tensor:
    """ImageNet-normalised RGB -> [-1, 1] RGB."""
    mean, std = _channel_stats(images)
    return (images * std + mean) * 2.0 - 1.0


def imagenet_value_of(pixel: float) -> torch.Tensor:
    """The ImageNet-normalised value (3,) of a grey pixel `pixel` in [0, 255]."""
    mean = torch.tensor(IMAGENET_MEAN)
    std = torch.tensor(IMAGENET_STD)
    return (pixel / 255.0 - mean) / std


def gan_to_uint8(image: torch.Tensor) -> np.ndarray:
    """One image (3, H, W) in [-1, 1] -> uint8 (H, W, 3) RGB, by (v + 1) / 2 * 255."""
    array = ((image.detach().float().cpu().clamp(-1, 1) + 1.0) * 0.5 * 255.0).round()
    return array.to(torch.uint8).permute(1, 2, 0).numpy()


def imagenet_to_uint8(image: torch.Tensor) -> np.ndarray:
    """One ImageNet-normalised image (3, H, W) -> uint8 (H, W, 3) RGB."""
    return gan_to_uint8(imagenet_to_gan(image.detach().float()))


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 3, size, size), bilinear (anti-aliased when shrinking); unchanged when
    the size already matches. Lets a generator and a NADS-Net trained at different input sizes
    work together (the cpu preset's 64 px GAN beside its 128 px NADS-Net)."""
    if images.shape[-2:] == (size, size):
        return images
    return torch.nn.functional.interpolate(images, size=(size, size), mode="bilinear", align_corners=False,
                                           antialias=images.shape[-1] > size)
