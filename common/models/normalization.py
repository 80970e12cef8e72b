"""Normalisation layers of the GAN: the SPADE layer and tools for its batch norms.

SPADE (spatially-adaptive denormalisation) normalises activations with a parameter-free
batch norm and then modulates them per pixel with a scale and a shift predicted from the
segmentation map (here: the 26-channel pose map, SPEC 7):

    out = param_free_norm(x) * (1 + gamma(segmap)) + beta(segmap)

The batch norm is a plain `nn.BatchNorm2d(affine=False)` so that the state_dict keys are
`param_free_norm.running_mean/running_var/num_batches_tracked`, exactly as the seed saved
them. Under DDP, `convert_sync_norms` turns it into `nn.SyncBatchNorm` with the same keys.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils.spectral_norm import SpectralNorm

SPADE_HIDDEN_CHANNELS = 128
_RUNNING_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


class SPADE(nn.Module):
    """Spatially-adaptive denormalisation of `norm_nc` channels conditioned on a label map.

    Args:
        norm_nc: channels C of the activations being normalised.
        label_nc: channels of the segmentation map (26 = 9 heatmaps + 16 PAFs + seatbelt).
        hidden_nc: channels of the shared embedding (`mlp_shared`), 128 as in SPADE.
    """

    def __init__(self, norm_nc: int, label_nc: int, hidden_nc: int = SPADE_HIDDEN_CHANNELS) -> None:
        super().__init__()
        self.param_free_norm = nn.BatchNorm2d(norm_nc, affine=False)
        self.mlp_shared = nn.Sequential(
            nn.Conv2d(label_nc, hidden_nc, kernel_size=3, padding=1),
            nn.ReLU(),
        )
        self.mlp_gamma = nn.Conv2d(hidden_nc, norm_nc, kernel_size=3, padding=1)
        self.mlp_beta = nn.Conv2d(hidden_nc, norm_nc, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor, segmap: torch.Tensor) -> torch.Tensor:
        """x (B, C, h, w), segmap (B, label_nc, H, W) -> (B, C, h, w).

        The segmap is resized (nearest) to x's spatial size before the embedding.
        """
        normalized = self.param_free_norm(x)
        if segmap.shape[-2:] != x.shape[-2:]:
            segmap = F.interpolate(segmap, size=x.shape[-2:], mode="nearest")
        embedding = self.mlp_shared(segmap)
        gamma = self.mlp_gamma(embedding)
        beta = self.mlp_beta(embedding)
        return normalized * (1 + gamma) + beta


def convert_sync_norms(module: nn.Module, process_group=None) -> nn.Module:
    """Replace every batch norm in `module` by `nn.SyncBatchNorm` (for DDP); keys are unchanged.

    On one device, or outside a process group, SyncBatchNorm behaves like BatchNorm2d.
    Returns the converted module (the same object when `module` itself is not a batch norm).
    """
    return nn.SyncBatchNorm.convert_sync_batchnorm(module, process_group)


def _spectral_norm_layers(module: nn.Module) -> Iterator[tuple[str, nn.Module, SpectralNorm]]:
    """(state_dict prefix relative to `module`, layer, its SpectralNorm hook) per
    spectral-normalised layer."""
    for name, submodule in module.named_modules():
        for hook in submodule._forward_pre_hooks.values():
            if isinstance(hook, SpectralNorm):
                yield (f"{name}." if name else ""), submodule, hook


def spectral_vectors(module: nn.Module) -> dict[str, torch.Tensor]:
    """Clones of the power-iteration vectors (`weight_u`, `weight_v`) of every spectral-norm
    layer in `module`, keyed by their state_dict name relative to `module`."""
    return {
        prefix + hook.name + suffix: getattr(layer, hook.name + suffix).detach().clone()
        for prefix, layer, hook in _spectral_norm_layers(module)
        for suffix in ("_u", "_v")
    }


@contextmanager
def frozen_norm_statistics(
    module: nn.Module, vectors: dict[str, torch.Tensor] | None = None
) -> Iterator[None]:
    """Run `module` without touching any stored normalisation statistics.

    Inside the context:
    - batch norms in training mode still normalise with the batch's statistics, but their
      running_mean / running_var / num_batches_tracked are not updated (they update
      throw-away copies, so the same operations run and autograd saves the same tensors);
    - spectral-norm layers skip their power iteration and use the stored `u`, `v` vectors,
      or, when `vectors` (from `spectral_vectors`) is given, those vectors instead. The
      buffers are swapped by assignment, never modified in place, so tensors that autograd
      saved inside the context stay valid after it.

    Why: activation checkpointing recomputes a block during backward, and that second pass
    must compute exactly what the first did and must not update the statistics twice. The
    same context lets a trained generator be run in training mode (batch statistics) while
    its stored statistics stay as they were (SPEC 10).
    """
    batch_norms = [m for m in module.modules() if isinstance(m, _BatchNorm)]
    spectral = list(_spectral_norm_layers(module))
    spectral_modes = [layer.training for _, layer, _ in spectral]
    swapped: list[tuple[nn.Module, str, torch.Tensor]] = []
    try:
        for bn in batch_norms:
            for key in _RUNNING_BUFFERS:
                original = getattr(bn, key, None)
                if original is not None:
                    swapped.append((bn, key, original))
                    setattr(bn, key, original.clone())
        for prefix, layer, hook in spectral:
            # The spectral-norm pre-hook runs its power iteration only in training mode;
            # the wrapped convolution itself behaves the same in both modes.
            layer.training = False
            if vectors is not None:
                for suffix in ("_u", "_v"):
                    key = hook.name + suffix
                    swapped.append((layer, key, getattr(layer, key)))
                    setattr(layer, key, vectors[prefix + key])
        yield
    finally:
        for owner, key, original in swapped:
            setattr(owner, key, original)
        for (_, layer, _), mode in zip(spectral, spectral_modes):
            layer.training = mode
