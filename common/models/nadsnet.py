"""NADS-Net with a PVT backbone: keypoint heatmaps, part affinity fields and a seatbelt mask.

image (B, 3, S, S) -> backbone [C2, C3, C4, C5] (strides 4..32) -> FPN [P2, P3, P4, P5]
(256 channels) -> three heads:
- keypoint heatmaps (B, 9 | 10, S/4, S/4) and PAFs (B, 16, S/4, S/4) from `MapBranch`,
- seatbelt probability (B, 1, S, S) in [0, 1] from `SegmentationBranch`.

Module names follow the seed's state_dict (`FPN.lateral_layer_5`, `PVT.block1.0.attn.q`,
`keypoint_heatmap_branch.convs_on_P5.0`, ...) so that its checkpoints load with
`strict=True`. The backbone is the seed's PVT-tiny or, as an option, a timm PVT-v2
(`pvt_v2_b0` .. `pvt_v2_b5`, built with random weights; ImageNet weights only from a
local file through `backbone_weights`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from common.parallel.devices import at_least_float32
from common.models.adapt import LoadReport, load_backbone_weights
from common.models.pvt import pvt_tiny
from common.posedata.pose import NUM_KEYPOINTS, NUM_PAF_CHANNELS, check_image_size

FPN_CHANNELS = 256
LEVEL_CHANNELS = 128  # channels of each pyramid level inside a head, before concatenation
HEAD_INIT_STD = 0.01
FPN_WIRINGS = ("seed", "standard")
TIMM_BACKBONES = tuple(f"pvt_v2_b{i}" for i in range(6))
BACKBONES = ("pvt_tiny",) + TIMM_BACKBONES

Pyramid = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


class NADSNetOutput(NamedTuple):
    """What NADS-Net returns: still a tuple (ONNX export and the seed's `heatmaps, pafs,
    seatbelt = net(x)` keep working), with names. `seatbelt` is None without that head."""

    heatmaps: torch.Tensor  # (B, 9 | 10, S/4, S/4)
    pafs: torch.Tensor  # (B, 16, S/4, S/4)
    seatbelt: torch.Tensor | None = None  # (B, 1, S, S) in [0, 1]


def _init_convs_normal(module: nn.Module, std: float = HEAD_INIT_STD) -> None:
    """Seed init of the FPN and the heads: conv weights N(0, std), biases 0."""
    for conv in module.modules():
        if isinstance(conv, nn.Conv2d):
            nn.init.normal_(conv.weight, mean=0.0, std=std)
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)


def _conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)


class FPN(nn.Module):
    """Feature pyramid: [C2, C3, C4, C5] -> (P2, P3, P4, P5), each (B, out_channels, S/r, S/r).

    Laterals are 1x1 convolutions, outputs 3x3; upsampling is nearest, to the finer level's size.

    wiring='seed' computes exactly what the seed computed (its checkpoints depend on it):
        L_i = relu(lateral_i(C_i))
        P5 = output_5(L5);  P4 = L4  (output_layer_4 exists but is never used; it is frozen)
        P3 = output_3(L3 + up(L4));  P2 = output_2(L2 + up(L3))
    (The seed also ran output_3 on L4 + up(L5) and discarded the result; that changes no
    output and is not repeated here.)

    wiring='standard' is the textbook FPN (Lin et al. 2017), no ReLU on the laterals:
        M5 = lateral_5(C5);  M_i = lateral_i(C_i) + up(M_{i+1});  P_i = output_i(M_i)
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int = FPN_CHANNELS, wiring: str = "seed") -> None:
        super().__init__()
        if wiring not in FPN_WIRINGS:
            raise ValueError(f"FPN wiring must be one of {FPN_WIRINGS}, got {wiring!r}")
        if len(in_channels) != 4:
            raise ValueError(f"FPN expects the channels of C2..C5 (4 values), got {list(in_channels)}")
        self.wiring = wiring
        channels_2, channels_3, channels_4, channels_5 = in_channels
        # Registration order = the seed's state_dict order.
        self.lateral_layer_5 = nn.Conv2d(channels_5, out_channels, kernel_size=1)
        self.lateral_layer_4 = nn.Conv2d(channels_4, out_channels, kernel_size=1)
        self.lateral_layer_3 = nn.Conv2d(channels_3, out_channels, kernel_size=1)
        self.lateral_layer_2 = nn.Conv2d(channels_2, out_channels, kernel_size=1)
        self.output_layer_5 = _conv3x3(out_channels, out_channels)
        self.output_layer_4 = _conv3x3(out_channels, out_channels)
        self.output_layer_3 = _conv3x3(out_channels, out_channels)
        self.output_layer_2 = _conv3x3(out_channels, out_channels)
        _init_convs_normal(self)
        if wiring == "seed":
            # Never used by the seed wiring: frozen, so that every trainable parameter gets a
            # gradient (DistributedDataParallel needs that without find_unused_parameters).
            self.output_layer_4.requires_grad_(False)

    @staticmethod
    def _upsample_to(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=like.shape[-2:], mode="nearest")

    def forward(self, features: Sequence[torch.Tensor]) -> Pyramid:
        c2, c3, c4, c5 = features
        if self.wiring == "seed":
            lateral_5 = F.relu(self.lateral_layer_5(c5))
            lateral_4 = F.relu(self.lateral_layer_4(c4))
            lateral_3 = F.relu(self.lateral_layer_3(c3))
            lateral_2 = F.relu(self.lateral_layer_2(c2))
            p5 = self.output_layer_5(lateral_5)
            p4 = lateral_4
            p3 = self.output_layer_3(lateral_3 + self._upsample_to(lateral_4, c3))
            p2 = self.output_layer_2(lateral_2 + self._upsample_to(lateral_3, c2))
            return p2, p3, p4, p5
        merged_5 = self.lateral_layer_5(c5)
        merged_4 = self.lateral_layer_4(c4) + self._upsample_to(merged_5, c4)
        merged_3 = self.lateral_layer_3(c3) + self._upsample_to(merged_4, c3)
        merged_2 = self.lateral_layer_2(c2) + self._upsample_to(merged_3, c2)
        return (
            self.output_layer_2(merged_2),
            self.output_layer_3(merged_3),
            self.output_layer_4(merged_4),
            self.output_layer_5(merged_5),
        )


class _PyramidFusion(nn.Module):
    """Per-level convs shared by both heads: (P2, P3, P4, P5) -> (B, 4 * level_channels, S/4, S/4).

    Each level: conv3x3(in -> level) + ReLU, conv3x3(level -> level) + ReLU; then P3, P4, P5
    are upsampled bilinearly (scale factor 2, 4, 8; align_corners False) to P2's grid and the
    four are concatenated in the order P2, P3, P4, P5.
    """

    def __init__(self, in_channels: int = FPN_CHANNELS, level_channels: int = LEVEL_CHANNELS) -> None:
        super().__init__()
        # Registration order = the seed's state_dict order (P5 first).
        self.convs_on_P5 = self._level_convs(in_channels, level_channels)
        self.convs_on_P4 = self._level_convs(in_channels, level_channels)
        self.convs_on_P3 = self._level_convs(in_channels, level_channels)
        self.convs_on_P2 = self._level_convs(in_channels, level_channels)

    @staticmethod
    def _level_convs(in_channels: int, level_channels: int) -> nn.Sequential:
        return nn.Sequential(
            _conv3x3(in_channels, level_channels),
            nn.ReLU(inplace=True),
            _conv3x3(level_channels, level_channels),
            nn.ReLU(inplace=True),
        )

    @staticmethod
    def _upsample(x: torch.Tensor, factor: int) -> torch.Tensor:
        return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)

    def fuse(self, pyramid: Sequence[torch.Tensor]) -> torch.Tensor:
        p2, p3, p4, p5 = pyramid
        return torch.cat(
            (
                self.convs_on_P2(p2),
                self._upsample(self.convs_on_P3(p3), 2),
                self._upsample(self.convs_on_P4(p4), 4),
                self._upsample(self.convs_on_P5(p5), 8),
            ),
            dim=1,
        )


class MapBranch(_PyramidFusion):
    """Head for keypoint heatmaps or PAFs: (P2, P3, P4, P5) -> (B, out_channels, S/4, S/4), unbounded.

    After the fusion (512 channels): conv3x3 512->512 + ReLU, conv3x3 512->256 + ReLU,
    conv1x1 256->out_channels.
    """

    def __init__(
        self, out_channels: int, in_channels: int = FPN_CHANNELS, level_channels: int = LEVEL_CHANNELS
    ) -> None:
        super().__init__(in_channels, level_channels)
        fused = 4 * level_channels
        self.convs_on_feature_maps = nn.Sequential(
            _conv3x3(fused, fused),
            nn.ReLU(inplace=True),
            _conv3x3(fused, fused // 2),
            nn.ReLU(inplace=True),
            nn.Conv2d(fused // 2, out_channels, kernel_size=1),
        )
        _init_convs_normal(self)

    def forward(self, pyramid: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.convs_on_feature_maps(self.fuse(pyramid))


class SegmentationBranch(_PyramidFusion):
    """Seatbelt head: (P2, P3, P4, P5) -> probability (B, 1, S, S) in [0, 1].

    After the fusion (4 L = 512 channels at the seed's L = 128): conv3x3 4L->L + ReLU, bilinear
    x2, conv3x3 L->L/4, bilinear x2, conv3x3 L/4->1, then (tanh(x) + 1) / 2 in float32 (or wider).
    """

    def __init__(self, in_channels: int = FPN_CHANNELS, level_channels: int = LEVEL_CHANNELS) -> None:
        super().__init__(in_channels, level_channels)
        self.conv_on_feature_maps = nn.Sequential(_conv3x3(4 * level_channels, level_channels), nn.ReLU(inplace=True))
        self.final_conv1 = _conv3x3(level_channels, level_channels // 4)
        self.final_conv2 = _conv3x3(level_channels // 4, 1)
        _init_convs_normal(self)

    def forward(self, pyramid: Sequence[torch.Tensor]) -> torch.Tensor:
        x = self.conv_on_feature_maps(self.fuse(pyramid))
        x = self.final_conv1(self._upsample(x, 2))
        x = self.final_conv2(self._upsample(x, 2))
        # In float32 under bf16 autocast too: in bfloat16, tanh rounds to exactly +-1 beyond
        # |x| of about 3, and the Dice-BCE's clamped log then passes no gradient back.
        return (torch.tanh(at_least_float32(x)) + 1.0) * 0.5


def _build_backbone(name: str, image_size: int) -> tuple[nn.Module, tuple[int, ...]]:
    """The backbone module and the channels of its C2..C5 outputs (random weights)."""
    if name == "pvt_tiny":
        backbone = pvt_tiny(image_size=image_size)
        return backbone, backbone.feature_channels
    if name in TIMM_BACKBONES:
        import timm  # only needed for this option

        # PVT-v2 has no absolute position embeddings (overlapping patch embeddings and a
        # depth-wise conv in the MLP), so its timm constructor takes no image size: it runs
        # at any input that is a multiple of 32. pretrained=False: nothing is ever downloaded.
        backbone = timm.create_model(name, pretrained=False, features_only=True, out_indices=(0, 1, 2, 3))
        return backbone, tuple(backbone.feature_info.channels())
    raise ValueError(f"unknown backbone {name!r}; choose one of {BACKBONES}")


class NADSNet(nn.Module):
    """NADS-Net: backbone -> FPN -> heatmap, PAF and (optionally) seatbelt heads.

    forward(image (B, 3, S, S), ImageNet-normalised RGB) -> NADSNetOutput(
        heatmaps (B, num_heatmaps, S/4, S/4), pafs (B, num_pafs, S/4, S/4),
        seatbelt (B, 1, S, S) in [0, 1], or None when `seatbelt` is False).
    S must be `image_size` for the PVT-tiny backbone (learned position embeddings), any
    multiple of 32 for a PVT-v2 backbone.

    Args:
        num_heatmaps: 9 keypoints, or 10 with a background channel.
        num_pafs: 2 per limb (16).
        seatbelt: build and run the seatbelt head.
        image_size: input side in pixels, a multiple of 32.
        backbone: 'pvt_tiny' (the seed's) or 'pvt_v2_b0' .. 'pvt_v2_b5' (timm).
        fpn: 'seed' (the seed's wiring, needed for its checkpoints) or 'standard'.
        fpn_channels: the FPN's width (256 in the seed).
        head_channels: each pyramid level's width inside the heads (128 in the seed; the fused
            map is 4x that). The heads are most of NADS-Net's cost at the seed's widths, so the
            cpu preset narrows both.
        backbone_weights: optional local file of backbone weights (ImageNet PVT-tiny, or timm
            PVT-v2) adapted and loaded by `common.models.adapt`; the report is kept in
            `backbone_load_report`. Not part of `config()`: a checkpoint of the whole network
            supersedes it.
    """

    def __init__(
        self,
        num_heatmaps: int = NUM_KEYPOINTS,
        num_pafs: int = NUM_PAF_CHANNELS,
        seatbelt: bool = True,
        image_size: int = 384,
        backbone: str = "pvt_tiny",
        fpn: str = "seed",
        backbone_weights: str | Path | None = None,
        fpn_channels: int = FPN_CHANNELS,
        head_channels: int = LEVEL_CHANNELS,
    ) -> None:
        super().__init__()
        check_image_size(image_size)
        if num_heatmaps <= 0 or num_pafs <= 0:
            raise ValueError(f"num_heatmaps and num_pafs must be positive, got {num_heatmaps}, {num_pafs}")
        self.num_heatmaps = num_heatmaps
        self.num_pafs = num_pafs
        self.has_seatbelt = seatbelt
        self.image_size = image_size
        self.backbone_name = backbone
        self.fpn_wiring = fpn
        self.fpn_channels, self.head_channels = fpn_channels, head_channels

        backbone_module, channels = _build_backbone(backbone, image_size)
        self.feature_channels = channels
        # Registration order = the seed's state_dict order: FPN, PVT, heads.
        self.FPN = FPN(channels, fpn_channels, wiring=fpn)
        self.PVT = backbone_module
        self.keypoint_heatmap_branch = MapBranch(num_heatmaps, fpn_channels, head_channels)
        self.PAF_branch = MapBranch(num_pafs, fpn_channels, head_channels)
        if seatbelt:
            self.seatbelt_segmentation_branch = SegmentationBranch(fpn_channels, head_channels)

        self.backbone_load_report: LoadReport | None = None
        if backbone_weights is not None:
            self.backbone_load_report = load_backbone_weights(self.PVT, backbone_weights)

    @property
    def backbone(self) -> nn.Module:
        """The backbone module (stored as `PVT`, the seed's name, whichever PVT it is)."""
        return self.PVT

    def config(self) -> dict[str, Any]:
        """Constructor arguments (JSON-serialisable) that rebuild this architecture."""
        return {
            "num_heatmaps": self.num_heatmaps,
            "num_pafs": self.num_pafs,
            "seatbelt": self.has_seatbelt,
            "image_size": self.image_size,
            "backbone": self.backbone_name,
            "fpn": self.fpn_wiring,
            "fpn_channels": self.fpn_channels,
            "head_channels": self.head_channels,
        }

    def forward(self, image: torch.Tensor) -> NADSNetOutput:
        pyramid = self.FPN(self.PVT(image))
        heatmaps = self.keypoint_heatmap_branch(pyramid)
        pafs = self.PAF_branch(pyramid)
        seatbelt = self.seatbelt_segmentation_branch(pyramid) if self.has_seatbelt else None
        return NADSNetOutput(heatmaps, pafs, seatbelt)
