"""Pyramid Vision Transformer (PVT v1), the backbone of the seed's NADS-Net.

Four stages, each a patch embedding (a strided convolution that shrinks the grid), a learned
position embedding and a few transformer blocks whose attention sees keys and values on a
coarser grid (spatial reduction). The stages return feature maps at strides 4, 8, 16 and 32,
which is what an FPN needs.

Parameter names follow the seed's state_dict exactly (`pos_embed_1`, `patch_embed1.proj`,
`block1.0.attn.q`, ...), so seed checkpoints load with `strict=True`. The class token, the
final norm and the 1000-way head are never used; they exist only because the seed's
checkpoints hold them. Official ImageNet PVT weights use another layout; see
`common.models.adapt.adapt_imagenet_pvt`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from common.parallel.devices import at_least_float32
from common.posedata.pose import check_image_size

# LayerNorm epsilons of the seed: transformer blocks (and the unused final norm) use 1e-6;
# the patch embeddings and the spatial-reduction norm use PyTorch's default 1e-5.
BLOCK_NORM_EPS = 1e-6
DEFAULT_NORM_EPS = 1e-5
INIT_STD = 0.02


class PatchEmbedding(nn.Module):
    """Non-overlapping patches -> tokens: conv(kernel = stride = patch_size) + LayerNorm.

    forward(x (B, C_in, H, W)) -> (tokens (B, H/p * W/p, dim), (H/p, W/p)).
    """

    def __init__(self, in_channels: int, dim: int, patch_size: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(dim, eps=DEFAULT_NORM_EPS)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x = self.proj(x)
        height, width = x.shape[-2:]
        tokens = self.norm(x.flatten(2).transpose(1, 2))
        return tokens, (height, width)


class SpatialReductionAttention(nn.Module):
    """Multi-head attention whose keys and values come from a grid shrunk by `sr_ratio`.

    Queries come from every token; keys and values from the tokens after a conv with
    kernel = stride = sr_ratio and a LayerNorm (when sr_ratio > 1), which cuts the cost of
    attention at the fine stages by sr_ratio^2. Scale head_dim^-0.5, softmax.

    forward(x (B, H*W, dim), (H, W)) -> (B, H*W, dim).
    """

    def __init__(self, dim: int, num_heads: int, sr_ratio: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.sr_ratio = sr_ratio
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim, eps=DEFAULT_NORM_EPS)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        batch, num_tokens, dim = x.shape
        head_dim = dim // self.num_heads
        # (B, heads, N, head_dim)
        q = self.q(x).reshape(batch, num_tokens, self.num_heads, head_dim).transpose(1, 2)
        if self.sr_ratio > 1:
            height, width = grid
            reduced = self.sr(x.transpose(1, 2).reshape(batch, dim, height, width))
            context = self.norm(reduced.flatten(2).transpose(1, 2))
        else:
            context = x
        # The kv output is laid out as [keys | values], each split into heads; ImageNet
        # weights depend on this order.
        kv = self.kv(context).reshape(batch, -1, 2, self.num_heads, head_dim).permute(2, 0, 3, 1, 4)
        keys, values = kv[0], kv[1]
        # In float32 under bf16 autocast too (autocast would cast its inputs to bfloat16):
        # PyTorch's CPU attention kernels are slower in bfloat16 than in float32 at every
        # PVT-tiny stage's shapes (docs/performance.md).
        with torch.autocast(q.device.type, enabled=False):
            out = F.scaled_dot_product_attention(*map(at_least_float32, (q, keys, values)))  # scale head_dim^-0.5
        return self.proj(out.to(q.dtype).transpose(1, 2).reshape(batch, num_tokens, dim))


class FeedForward(nn.Module):
    """Linear(dim -> hidden), GELU, Linear(hidden -> dim), per token. (B, N, dim) -> (B, N, dim)."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class TransformerBlock(nn.Module):
    """Pre-norm block: x + attn(norm1(x)), then x + mlp(norm2(x)).

    forward(x (B, H*W, dim), (H, W)) -> (B, H*W, dim).
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, sr_ratio: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=BLOCK_NORM_EPS)
        self.attn = SpatialReductionAttention(dim, num_heads, sr_ratio, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=BLOCK_NORM_EPS)
        self.mlp = FeedForward(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), grid)
        return x + self.mlp(self.norm2(x))


class PyramidVisionTransformer(nn.Module):
    """PVT v1 backbone with learned position embeddings sized for `image_size`.

    forward(image (B, 3, S, S)) -> [C2, C3, C4, C5], Ci of shape (B, embed_dims[i], S/r, S/r)
    with r = 4, 8, 16, 32 (for the default patch sizes 4, 2, 2, 2). S must equal
    `image_size`, because the position embeddings are learned for that grid.

    Attributes named as in the seed's state_dict: pos_embed_1..4, cls_token,
    patch_embed1..4, block1..4, norm, head. The class token, final norm and head are unused
    and frozen (requires_grad False).
    """

    def __init__(
        self,
        image_size: int = 384,
        in_channels: int = 3,
        num_classes: int = 1000,
        patch_sizes: Sequence[int] = (4, 2, 2, 2),
        embed_dims: Sequence[int] = (64, 128, 320, 512),
        num_heads: Sequence[int] = (1, 2, 5, 8),
        mlp_ratios: Sequence[float] = (8, 8, 4, 4),
        depths: Sequence[int] = (2, 2, 2, 2),
        sr_ratios: Sequence[int] = (8, 4, 2, 1),
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        num_stages = len(embed_dims)
        for name, values in (("patch_sizes", patch_sizes), ("num_heads", num_heads), ("mlp_ratios", mlp_ratios),
                             ("depths", depths), ("sr_ratios", sr_ratios)):
            if len(values) != num_stages:
                raise ValueError(f"{name} has {len(values)} entries, embed_dims has {num_stages}")
        total_stride = 1
        for patch in patch_sizes:
            total_stride *= patch
        if image_size <= 0 or image_size % total_stride:
            raise ValueError(f"image_size must be a positive multiple of {total_stride}, got {image_size}")

        self.image_size = image_size
        self.embed_dims = tuple(embed_dims)
        self.num_stages = num_stages

        stride = 1
        for stage, (patch, dim) in enumerate(zip(patch_sizes, embed_dims), start=1):
            stride *= patch
            side = image_size // stride
            setattr(self, f"pos_embed_{stage}", nn.Parameter(torch.zeros(1, side * side, dim)))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dims[-1]))  # unused (seed checkpoints hold it)

        previous_dim = in_channels
        for stage, (patch, dim) in enumerate(zip(patch_sizes, embed_dims), start=1):
            setattr(self, f"patch_embed{stage}", PatchEmbedding(previous_dim, dim, patch))
            previous_dim = dim
        for stage in range(1, num_stages + 1):
            index = stage - 1
            blocks = nn.ModuleList(
                TransformerBlock(embed_dims[index], num_heads[index], mlp_ratios[index], sr_ratios[index], qkv_bias)
                for _ in range(depths[index])
            )
            setattr(self, f"block{stage}", blocks)
        self.norm = nn.LayerNorm(embed_dims[-1], eps=BLOCK_NORM_EPS)  # unused
        self.head = nn.Linear(embed_dims[-1], num_classes)  # unused

        self.reset_parameters()
        # The class token, final norm and head never take part in forward, so they would never
        # get a gradient; freezing them says so, and lets DistributedDataParallel run without
        # find_unused_parameters.
        for unused in (self.cls_token, *self.norm.parameters(), *self.head.parameters()):
            unused.requires_grad_(False)

    @property
    def feature_channels(self) -> tuple[int, ...]:
        """Channels of C2..C5."""
        return self.embed_dims

    def reset_parameters(self) -> None:
        """Seed init: Linear weights, position embeddings and class token truncated normal
        (std 0.02), Linear biases 0, LayerNorm 1 / 0, convolutions PyTorch's default."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=INIT_STD)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        for stage in range(1, self.num_stages + 1):
            nn.init.trunc_normal_(self.position_embedding(stage), std=INIT_STD)
        nn.init.trunc_normal_(self.cls_token, std=INIT_STD)

    def position_embedding(self, stage: int) -> nn.Parameter:
        """The learned position embedding of `stage` (1-based), (1, side^2, embed_dim)."""
        return getattr(self, f"pos_embed_{stage}")

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        if image.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(
                f"PVT was built for {self.image_size}x{self.image_size} input (its position embeddings are "
                f"learned for that grid), got {tuple(image.shape[-2:])}"
            )
        features: list[torch.Tensor] = []
        x = image
        for stage in range(1, self.num_stages + 1):
            tokens, grid = getattr(self, f"patch_embed{stage}")(x)
            tokens = tokens + self.position_embedding(stage)
            for block in getattr(self, f"block{stage}"):
                tokens = block(tokens, grid)
            x = tokens.transpose(1, 2).reshape(tokens.shape[0], -1, *grid)
            features.append(x)
        return features


def pvt_tiny(image_size: int = 384, **kwargs) -> PyramidVisionTransformer:
    """PVT-tiny as the seed built it: dims 64/128/320/512, heads 1/2/5/8, MLP ratios 8/8/4/4,
    depths 2/2/2/2, spatial reduction 8/4/2/1, qkv bias; `image_size` a multiple of 32."""
    check_image_size(image_size)
    config = dict(
        patch_sizes=(4, 2, 2, 2),
        embed_dims=(64, 128, 320, 512),
        num_heads=(1, 2, 5, 8),
        mlp_ratios=(8, 8, 4, 4),
        depths=(2, 2, 2, 2),
        sr_ratios=(8, 4, 2, 1),
        qkv_bias=True,
    )
    config.update(kwargs)
    return PyramidVisionTransformer(image_size=image_size, **config)
