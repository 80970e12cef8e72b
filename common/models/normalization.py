"""Normalisation layers of the GAN: the SPADE layer and tools for its batch norms.

SPADE (spatially-adaptive denormalisation) normalises activations with a parameter-free
batch norm and then modulates them per pixel with a scale and a shift predicted from the
segmentation map (here: the 26-channel pose map):

    out = param_free_norm(x) * (1 + gamma(segmap)) + beta(segmap)

The batch norm is a plain `nn.BatchNorm2d(affine=False)` so that the state_dict keys are
`param_free_norm.running_mean/running_var/num_batches_tracked`, exactly as the seed saved
them. Under DDP, `convert_batch_norms_for_distributed` turns it into `nn.SyncBatchNorm`
(NCCL) or `common.parallel.distributed_ops.DistributedBatchNorm2d` (gloo, CPU) with the same keys.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils.spectral_norm import SpectralNorm

from common.parallel.distributed_ops import DistributedBatchNorm2d

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


def normalised_map_areas(build: Callable[[], nn.Module], input_shape: tuple[int, ...]) -> dict[str, int]:
    """The smallest map (H x W values per channel and sample) that the batch norms and the
    instance norms of a network see, for one input of `input_shape` (C, H, W).

    `build()` constructs the network; it is built and run on the meta device (shapes only:
    no memory, no arithmetic). A batch norm in training mode needs more than one value per
    channel over the batch (batch x area > 1), an instance norm more than one per sample
    (area > 1): the options that set sizes are checked against these numbers.
    Returns {'batch_norm': area or 0 if none, 'instance_norm': area or 0 if none}.
    """
    with torch.device("meta"):
        network = build()
    smallest = {"batch_norm": 0, "instance_norm": 0}

    def remember(kind: str):
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            area = int(inputs[0].shape[-2] * inputs[0].shape[-1])
            smallest[kind] = area if smallest[kind] == 0 else min(smallest[kind], area)

        return hook

    for module in network.modules():
        if isinstance(module, _BatchNorm):
            module.register_forward_pre_hook(remember("batch_norm"))
        elif isinstance(module, nn.InstanceNorm2d):
            module.register_forward_pre_hook(remember("instance_norm"))
    network.eval()  # eval mode skips the batch-size check, so every layer is reached
    try:
        with torch.no_grad():
            network(torch.empty((1,) + tuple(input_shape), device="meta"))
    except ValueError:
        pass  # an instance norm refused a 1 x 1 map: the hook recorded it before it ran
    return smallest


def convert_batch_norms_for_distributed(
    module: nn.Module, backend: str | None = None, process_group: dist.ProcessGroup | None = None
) -> nn.Module:
    """Replace every batch norm in `module` by one that synchronises its statistics over the
    processes of `process_group` (None: the default group); state_dict keys are unchanged.

    backend 'nccl': `nn.SyncBatchNorm` (CUDA tensors only), for every _BatchNorm. Any other
    backend ('gloo', ...): `DistributedBatchNorm2d`, for every nn.BatchNorm2d (runs wherever
    all_reduce does, CPU included). None: the backend of the initialised process group.
    The new layers hold the old ones' parameters and running buffers (the same tensors) and
    training mode. Outside a process group both behave like nn.BatchNorm2d. Returns the
    converted module (a new object only when `module` itself is a batch norm).
    """
    if backend is None:
        if not (dist.is_available() and dist.is_initialized()):
            raise ValueError("no process group is initialised: pass the backend ('nccl' or 'gloo')")
        backend = dist.get_backend(process_group)
    if str(backend).lower() == "nccl":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module, process_group)
    return _to_distributed_batch_norms(module, process_group)


def _to_distributed_batch_norms(module: nn.Module, process_group: dist.ProcessGroup | None) -> nn.Module:
    """`module` with every nn.BatchNorm2d below it (or itself) made a DistributedBatchNorm2d."""
    if isinstance(module, nn.BatchNorm2d) and not isinstance(module, DistributedBatchNorm2d):
        return DistributedBatchNorm2d.from_batch_norm(module, process_group)
    for name, child in module.named_children():
        converted = _to_distributed_batch_norms(child, process_group)
        if converted is not child:
            setattr(module, name, converted)
    return module


def convert_sync_norms(module: nn.Module, process_group=None) -> nn.Module:
    """Replace every batch norm in `module` by `nn.SyncBatchNorm` (for DDP on NCCL); keys are
    unchanged. `convert_batch_norms_for_distributed(module, "nccl", process_group)`.

    On one device, or outside a process group, SyncBatchNorm behaves like BatchNorm2d.
    Returns the converted module (the same object when `module` itself is not a batch norm).
    """
    return convert_batch_norms_for_distributed(module, "nccl", process_group)


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
    its stored statistics stay as they were (how NADS-Net training renders its generated samples).
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
