"""SPADE generator conditioned on pose maps.

The module names (fc, head_0, G_middle_0, G_middle_1, up_0..up_3 [, up_4], conv_img) and the
SPADE residual block's names (conv_0, conv_1, conv_s, norm_0, norm_1, norm_s) are those of
NVlabs SPADE, so checkpoints written by the seed load with strict=True.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm
from torch.utils.checkpoint import checkpoint

from common.parallel.devices import at_least_float32
from common.models.normalization import SPADE, SPADE_HIDDEN_CHANNELS, frozen_norm_statistics, spectral_vectors

# Number of x2 nearest upsamplings between the start grid and the output, per SPADE option.
UPSAMPLINGS = {"normal": 5, "more": 6, "most": 7}
LEAKY_SLOPE = 0.2


class SPADEResnetBlock(nn.Module):
    """Residual block with SPADE normalisation: fin -> fout channels at the input's size.

    main path:  conv_1(lrelu(norm_1(conv_0(lrelu(norm_0(x, seg))), seg)))   (fin -> fmiddle -> fout)
    shortcut:   conv_s(norm_s(x, seg)) when fin != fout (1x1, no bias, no activation), else x
    with fmiddle = min(fin, fout); every convolution spectral-normalised when `spectral`.
    """

    def __init__(self, fin: int, fout: int, semantic_nc: int, spectral: bool = True,
                 spade_hidden: int = SPADE_HIDDEN_CHANNELS) -> None:
        super().__init__()
        self.learned_shortcut = fin != fout
        fmiddle = min(fin, fout)
        self.conv_0 = nn.Conv2d(fin, fmiddle, kernel_size=3, padding=1)
        self.conv_1 = nn.Conv2d(fmiddle, fout, kernel_size=3, padding=1)
        if self.learned_shortcut:
            self.conv_s = nn.Conv2d(fin, fout, kernel_size=1, bias=False)
        if spectral:
            self.conv_0 = spectral_norm(self.conv_0)
            self.conv_1 = spectral_norm(self.conv_1)
            if self.learned_shortcut:
                self.conv_s = spectral_norm(self.conv_s)
        self.norm_0 = SPADE(fin, semantic_nc, spade_hidden)
        self.norm_1 = SPADE(fmiddle, semantic_nc, spade_hidden)
        if self.learned_shortcut:
            self.norm_s = SPADE(fin, semantic_nc, spade_hidden)

    def forward(self, x: torch.Tensor, segmap: torch.Tensor) -> torch.Tensor:
        """x (B, fin, h, w), segmap (B, semantic_nc, H, W) -> (B, fout, h, w)."""
        shortcut = self.conv_s(self.norm_s(x, segmap)) if self.learned_shortcut else x
        # In place: SPADE's output is not needed by its own backward, so this saves one
        # activation-sized buffer per layer at the same values.
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, segmap), LEAKY_SLOPE, inplace=True))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, segmap), LEAKY_SLOPE, inplace=True))
        return shortcut + dx


def _run_checkpointed(block: SPADEResnetBlock, x: torch.Tensor, segmap: torch.Tensor) -> torch.Tensor:
    """Run `block` under activation checkpointing, with a recompute identical to the first pass.

    The first pass updates the batch-norm running statistics and the spectral-norm vectors
    (training mode) as usual. The recompute during backward must neither update them a second
    time nor compute a different weight, so it runs inside `frozen_norm_statistics` with the
    spectral-norm vectors the first pass ended with (those it normalised the weights by).
    """
    first_pass_vectors: dict[str, torch.Tensor] = {}
    passes = {"count": 0}

    def run(x: torch.Tensor, segmap: torch.Tensor) -> torch.Tensor:
        passes["count"] += 1
        if passes["count"] == 1:
            return block(x, segmap)
        with frozen_norm_statistics(block, first_pass_vectors):
            return block(x, segmap)

    out = checkpoint(run, x, segmap, use_reentrant=False)
    first_pass_vectors.update(spectral_vectors(block))
    return out


class SPADEGenerator(nn.Module):
    """SPADE generator: pose map (B, semantic_nc, S, S) -> image (B, 3, S, S) in [-1, 1].

    Args:
        semantic_nc: channels of the conditioning map (26: 9 heatmaps + 16 PAFs + seatbelt).
        ngf: base width; the blocks run at 16, 16, 16, 16, 8, 4, 2, 1 (and 1/2 for 'most') x ngf.
        crop_size: output side S in pixels; must be a multiple of 2**upsamplings
            (32 for 'normal', 64 for 'more', 128 for 'most').
        num_upsampling_layers: 'normal' (5 x2 upsamplings), 'more' (6: an extra one between
            G_middle_0 and G_middle_1), 'most' (7: also an extra block up_4, ngf -> ngf/2, at
            the end).
        checkpoint_blocks: recompute each residual block's activations during backward
            (less memory, about one more block forward of time) while training with grad.
        spade_hidden: channels of every SPADE layer's shared embedding (`mlp_shared`): 128 as
            in SPADE and the seed. At small widths those full-resolution convolutions are most
            of the generator's cost, so the cpu preset narrows them.
    """

    def __init__(
        self,
        semantic_nc: int = 26,
        ngf: int = 64,
        crop_size: int = 384,
        num_upsampling_layers: str = "normal",
        checkpoint_blocks: bool = False,
        spade_hidden: int = SPADE_HIDDEN_CHANNELS,
    ) -> None:
        super().__init__()
        if num_upsampling_layers not in UPSAMPLINGS:
            raise ValueError(
                f"num_upsampling_layers must be one of {sorted(UPSAMPLINGS)}, got {num_upsampling_layers!r}"
            )
        num_up = UPSAMPLINGS[num_upsampling_layers]
        if crop_size <= 0 or crop_size % (2**num_up) != 0:
            raise ValueError(
                f"crop_size must be a positive multiple of {2**num_up} for "
                f"num_upsampling_layers={num_upsampling_layers!r} ({num_up} x2 upsamplings), got {crop_size}"
            )
        min_ngf = 2 if num_upsampling_layers == "most" else 1
        if ngf < min_ngf:
            raise ValueError(f"ngf must be at least {min_ngf} for {num_upsampling_layers!r}, got {ngf}")
        self.semantic_nc = semantic_nc
        self.crop_size = crop_size
        self.num_upsampling_layers = num_upsampling_layers
        self.start_size = crop_size // 2**num_up
        self.checkpoint_blocks = checkpoint_blocks

        nf = ngf
        self.fc = nn.Conv2d(semantic_nc, 16 * nf, kernel_size=3, padding=1)
        self.head_0 = SPADEResnetBlock(16 * nf, 16 * nf, semantic_nc, spade_hidden=spade_hidden)
        self.G_middle_0 = SPADEResnetBlock(16 * nf, 16 * nf, semantic_nc, spade_hidden=spade_hidden)
        self.G_middle_1 = SPADEResnetBlock(16 * nf, 16 * nf, semantic_nc, spade_hidden=spade_hidden)
        self.up_0 = SPADEResnetBlock(16 * nf, 8 * nf, semantic_nc, spade_hidden=spade_hidden)
        self.up_1 = SPADEResnetBlock(8 * nf, 4 * nf, semantic_nc, spade_hidden=spade_hidden)
        self.up_2 = SPADEResnetBlock(4 * nf, 2 * nf, semantic_nc, spade_hidden=spade_hidden)
        self.up_3 = SPADEResnetBlock(2 * nf, 1 * nf, semantic_nc, spade_hidden=spade_hidden)
        final_nc = nf
        if num_upsampling_layers == "most":
            self.up_4 = SPADEResnetBlock(1 * nf, nf // 2, semantic_nc, spade_hidden=spade_hidden)
            final_nc = nf // 2
        self.conv_img = nn.Conv2d(final_nc, 3, kernel_size=3, padding=1)

    def _block(self, block: SPADEResnetBlock, x: torch.Tensor, segmap: torch.Tensor) -> torch.Tensor:
        if self.checkpoint_blocks and self.training and torch.is_grad_enabled():
            return _run_checkpointed(block, x, segmap)
        return block(x, segmap)

    @staticmethod
    def _up(x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2, mode="nearest")

    def forward(self, segmap: torch.Tensor) -> torch.Tensor:
        """segmap (B, semantic_nc, H, W) float -> image (B, 3, crop_size, crop_size) in [-1, 1].

        H, W are normally crop_size; the map is resized (nearest) to the start grid
        (crop_size / 2**upsamplings) and to every block's size.
        """
        if segmap.dim() != 4 or segmap.shape[1] != self.semantic_nc:
            raise ValueError(
                f"segmap must be (B, {self.semantic_nc}, H, W), got {tuple(segmap.shape)}"
            )
        x = F.interpolate(segmap, size=(self.start_size, self.start_size), mode="nearest")
        x = self.fc(x)
        x = self._block(self.head_0, x, segmap)
        x = self._up(x)
        x = self._block(self.G_middle_0, x, segmap)
        if self.num_upsampling_layers in ("more", "most"):
            x = self._up(x)
        x = self._block(self.G_middle_1, x, segmap)
        for block in (self.up_0, self.up_1, self.up_2, self.up_3):
            x = self._up(x)
            x = self._block(block, x, segmap)
        if self.num_upsampling_layers == "most":
            x = self._up(x)
            x = self._block(self.up_4, x, segmap)
        x = self.conv_img(F.leaky_relu(x, LEAKY_SLOPE))
        x = torch.tanh(at_least_float32(x))  # float32 under bf16 autocast: see SegmentationBranch.forward
        if x.shape[-2:] != (self.crop_size, self.crop_size):
            x = F.interpolate(x, size=(self.crop_size, self.crop_size), mode="bilinear", align_corners=False)
        return x
