"""Weight initialisation of the GAN networks.

The seed built each network, moved it to the GPU and only then called SPADE's xavier init.
Under spectral norm the module's `weight` attribute is a stale copy after the move, so the
init never reached `weight_orig`: every spectral-normed conv trained from PyTorch's default
init (kaiming uniform, a = sqrt(5)) with biases 0, and only the other layers got xavier
normal with gain 0.02. 'as-run' (the default) reproduces that; the other types initialise
every layer alike (the trainable weight: `weight_orig` under spectral norm).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

INIT_TYPES = ("as-run", "xavier", "normal", "xavier_uniform", "kaiming", "orthogonal", "none")


def _weight_of(module: nn.Module) -> torch.Tensor | None:
    """The trainable weight of a conv / linear layer: `weight_orig` under spectral norm
    (the `weight` attribute there is recomputed from it at every forward)."""
    weight = getattr(module, "weight_orig", None)
    if weight is None:
        weight = getattr(module, "weight", None)
    return weight if isinstance(weight, torch.Tensor) else None


@torch.no_grad()
def init_weights(net: nn.Module, init_type: str = "as-run", gain: float = 0.02) -> nn.Module:
    """Initialise `net` in place and return it.

    - Conv*/Linear weights: per `init_type`; 'as-run' (default) = as the seed ran it (see the
      module docstring): spectral-normed layers keep PyTorch's default, the others get
      'xavier'; 'xavier' = xavier normal with `gain`,
      'normal' = N(0, gain), 'xavier_uniform' (gain 1), 'kaiming' (fan_in), 'orthogonal'
      (`gain`), 'none' = left as constructed (PyTorch's default). Biases 0 (except 'none').
    - Batch norms with affine parameters: weight N(1, gain), bias 0. The parameter-free
      batch norms of SPADE and instance norms without affine are left alone.
    """
    if init_type not in INIT_TYPES:
        raise ValueError(f"init_type must be one of {INIT_TYPES}, got {init_type!r}")
    for module in net.modules():
        if isinstance(module, _BatchNorm):
            if module.weight is not None:
                nn.init.normal_(module.weight, 1.0, gain)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)):
            if init_type == "none":
                continue
            weight = _weight_of(module)
            spectral = hasattr(module, "weight_orig")
            if weight is not None and not (init_type == "as-run" and spectral):
                _initialise(weight, "xavier" if init_type == "as-run" else init_type, gain)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return net


def _initialise(weight: torch.Tensor, init_type: str, gain: float) -> None:
    if init_type == "normal":
        nn.init.normal_(weight, 0.0, gain)
    elif init_type == "xavier":
        nn.init.xavier_normal_(weight, gain=gain)
    elif init_type == "xavier_uniform":
        nn.init.xavier_uniform_(weight, gain=1.0)
    elif init_type == "kaiming":
        nn.init.kaiming_normal_(weight, a=0, mode="fan_in")
    elif init_type == "orthogonal":
        nn.init.orthogonal_(weight, gain=gain)
