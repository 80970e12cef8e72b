"""Checkpoint filters: load foreign state dicts into this project's networks, with a report.

One place adapts every checkpoint layout the project meets (in the spirit of timm's
checkpoint filter functions):
- 'native': this project's (= the seed's) own keys, e.g. a seed NADS-Net checkpoint
  (`FPN.*`, `PVT.*`, `*_branch.*`), possibly saved from `nn.DataParallel` (`module.` prefix),
  or a bare backbone state dict. Position embeddings learned for another image size are
  resized bilinearly.
- 'imagenet_pvt': the official ImageNet PVT v1 release (`pos_embed1`.. instead of our
  `pos_embed_1`.., sized for 224 input, with one extra class position at stage 4).
- 'timm_pvt_v2': timm's PVT-v2 classifier (`stages.0.*`, `head.*`); loaded into the
  `features_only` backbone, whose modules are named `stages_0.*`.
- 'official_pvt_v2': the original PVT-v2 release (`patch_embed1.*`, `block1.*` with
  `dwconv`), converted to timm's layout by timm's own filter first.

`load_into(model, state_dict)` picks the layout from the key names, decides whether the
weights belong to the whole network or to its backbone (`model.backbone`), adapts them and
loads what fits, returning a `LoadReport`. With `strict=True` any missing, unexpected or
mis-shaped key raises `CheckpointMismatchError` instead (nothing is loaded then).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from common.training.checkpoints import describe_mismatch, load_state_dict_file
from common.errors import CheckpointError
from common.models.pvt import PyramidVisionTransformer

StateDict = dict[str, torch.Tensor]

DATA_PARALLEL_PREFIX = "module."
LAYOUTS = ("native", "imagenet_pvt", "timm_pvt_v2", "official_pvt_v2")
LAYOUT_DESCRIPTIONS = {
    "native": "this project's (seed) layout",
    "imagenet_pvt": "official ImageNet PVT v1 layout",
    "timm_pvt_v2": "timm PVT-v2 layout",
    "official_pvt_v2": "official PVT-v2 release layout",
}
# The ImageNet PVT v1 family (tiny .. large) uses patch sizes 4, 2, 2, 2.
IMAGENET_PVT_STRIDES = (4, 8, 16, 32)
_IMAGENET_POS_EMBED = re.compile(r"pos_embed(\d+)")


@dataclass
class LoadReport:
    """What `load_into` did. Keys are relative to the module that received the weights
    (`target`, e.g. 'NADSNet' or 'NADSNet.PVT').

    loaded: keys whose tensors were copied (including resized ones).
    missing: the target's keys the checkpoint did not provide (left as they were).
    unexpected: checkpoint keys (after adaptation) the target does not have (ignored).
    resized: position embeddings resized to the target's token grid (also in `loaded`).
    mismatched: keys present on both sides with incompatible shapes (not loaded).
    notes: one line per adaptation (renames, dropped class position, resize shapes).
    """

    target: str
    layout: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    resized: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """True when every key matched: nothing missing, unexpected or mis-shaped."""
        return not (self.missing or self.unexpected or self.mismatched)

    def __str__(self) -> str:
        total = len(self.loaded) + len(self.missing) + len(self.mismatched)
        lines = [
            f"loaded {len(self.loaded)}/{total} tensors into {self.target} "
            f"from a checkpoint in {LAYOUT_DESCRIPTIONS.get(self.layout, self.layout)}"
        ]
        if self.resized:
            lines.append(f"  resized: {len(self.resized)} key(s): {', '.join(self.resized[:8])}")
        problems = describe_mismatch(self.missing, self.unexpected, self.mismatched)
        if problems:
            lines.extend("  " + line for line in problems.splitlines())
        lines.extend(f"  note: {note}" for note in self.notes)
        return "\n".join(lines)


class CheckpointMismatchError(CheckpointError):
    """A strict load whose keys or shapes do not all match; `.report` has the details.
    The message is one line: the source, its layout, the target, then the mismatch groups."""

    def __init__(self, report: LoadReport, source: str = "checkpoint") -> None:
        self.report = report
        details = describe_mismatch(report.missing, report.unexpected, report.mismatched).replace("\n", "; ")
        super().__init__(
            f"{source} ({LAYOUT_DESCRIPTIONS.get(report.layout, report.layout)}) "
            f"does not match {report.target}: {details}"
        )


def strip_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str = DATA_PARALLEL_PREFIX) -> StateDict:
    """Remove `prefix` from every key when all keys carry it (a DataParallel/DDP save)."""
    if state_dict and all(key.startswith(prefix) for key in state_dict):
        return {key[len(prefix):]: value for key, value in state_dict.items()}
    return dict(state_dict)


def detect_layout(state_dict: Mapping[str, torch.Tensor]) -> str:
    """Name the checkpoint layout (one of LAYOUTS) from its key names."""
    keys = list(state_dict)
    if any(_IMAGENET_POS_EMBED.fullmatch(key) for key in keys):
        return "imagenet_pvt"
    if "patch_embed1.proj.weight" in state_dict and any(".dwconv." in key for key in keys):
        return "official_pvt_v2"
    if any(key.startswith("stages.") for key in keys):
        return "timm_pvt_v2"
    return "native"


def resize_position_embedding(position_embedding: torch.Tensor, side: int) -> torch.Tensor:
    """Bilinearly resize a square grid of position embeddings (align_corners False).

    (1, n * n, C) -> (1, side * side, C); the result has the input's dtype.
    """
    _, num_positions, channels = position_embedding.shape
    source_side = math.isqrt(num_positions)
    if source_side * source_side != num_positions:
        raise ValueError(f"position embedding with {num_positions} positions is not a square grid")
    grid = position_embedding.detach().float().reshape(1, source_side, source_side, channels).permute(0, 3, 1, 2)
    resized = F.interpolate(grid, size=(side, side), mode="bilinear", align_corners=False)
    return resized.permute(0, 2, 3, 1).reshape(1, side * side, channels).to(position_embedding.dtype)


def _adapt_imagenet_pvt(
    state_dict: Mapping[str, torch.Tensor], image_size: int
) -> tuple[StateDict, list[str], list[str]]:
    """`adapt_imagenet_pvt` that also returns (resized keys, notes)."""
    adapted: StateDict = {}
    resized: list[str] = []
    notes: list[str] = []
    for key, value in state_dict.items():
        match = _IMAGENET_POS_EMBED.fullmatch(key)
        if match is None:
            adapted[key] = value
            continue
        stage = int(match.group(1))
        new_key = f"pos_embed_{stage}"
        num_positions = value.shape[1]
        if math.isqrt(num_positions) ** 2 != num_positions and math.isqrt(num_positions - 1) ** 2 == num_positions - 1:
            # ImageNet PVT prepends the class token at the last stage and gives it position 0.
            value = value[:, 1:]
            notes.append(f"{key}: dropped the class-token position ({num_positions} -> {num_positions - 1})")
        side = image_size // IMAGENET_PVT_STRIDES[stage - 1]
        if value.shape[1] != side * side:
            source_shape = tuple(value.shape)
            value = resize_position_embedding(value, side)
            resized.append(new_key)
            notes.append(f"{key} -> {new_key}: resized {source_shape} -> {tuple(value.shape)}")
        else:
            notes.append(f"{key} -> {new_key}: renamed")
        adapted[new_key] = value
    return adapted, resized, notes


def adapt_imagenet_pvt(state_dict: Mapping[str, torch.Tensor], image_size: int) -> StateDict:
    """Official ImageNet PVT v1 weights -> this project's `PyramidVisionTransformer` keys.

    Renames `pos_embedN` to `pos_embed_N`, drops stage 4's extra class position
    ((1, 7*7 + 1, 512) at 224 input) and resizes each grid bilinearly to the token grid of
    `image_size` (S/4, S/8, S/16, S/32 per side). All other keys (patch embeddings, blocks,
    cls_token, final norm, 1000-way head) already have our names and are kept unchanged.
    """
    return _adapt_imagenet_pvt(state_dict, image_size)[0]


def _adapt_timm_pvt_v2(
    state_dict: Mapping[str, torch.Tensor], target_keys: set[str], layout: str
) -> tuple[StateDict, list[str]]:
    """timm (or official) PVT-v2 weights -> the keys of a timm `features_only` backbone."""
    notes: list[str] = []
    if layout == "official_pvt_v2":
        from timm.models.pvt_v2 import checkpoint_filter_fn

        state_dict = checkpoint_filter_fn(dict(state_dict), None)
        notes.append("converted the official PVT-v2 layout to timm's with timm.models.pvt_v2.checkpoint_filter_fn")
    adapted: StateDict = {}
    renamed = 0
    for key, value in state_dict.items():
        # features_only wrappers flatten the top modules: 'stages.0.x' becomes 'stages_0.x'.
        flattened = key.replace(".", "_", 1)
        if key not in target_keys and flattened in target_keys:
            key = flattened
            renamed += 1
        adapted[key] = value
    if renamed:
        notes.append(f"renamed {renamed} keys 'stages.N.*' -> 'stages_N.*' (timm features_only naming)")
    return adapted, notes


def _is_position_embedding(key: str) -> bool:
    return key.rsplit(".", 1)[-1].startswith("pos_embed")


def _child_name(model: nn.Module, child: nn.Module) -> str:
    for name, module in model.named_children():
        if module is child:
            return name
    return "backbone"


def _plan_load(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], prefix: str = DATA_PARALLEL_PREFIX
) -> tuple[nn.Module, StateDict, LoadReport]:
    """Work out where `state_dict` goes and what of it fits: (target module, tensors to load,
    report). Loads nothing."""
    source = strip_prefix(state_dict, prefix) if prefix else dict(state_dict)
    removed_prefix = source.keys() != state_dict.keys()
    layout = detect_layout(source)

    target, target_name = model, type(model).__name__
    backbone = getattr(model, "backbone", None)
    if isinstance(backbone, nn.Module):
        model_keys, backbone_keys = set(model.state_dict()), set(backbone.state_dict())
        if layout != "native" or len(backbone_keys & set(source)) > len(model_keys & set(source)):
            target = backbone
            target_name = f"{target_name}.{_child_name(model, backbone)}"

    target_state = target.state_dict()
    report = LoadReport(target=target_name, layout=layout)
    if removed_prefix:
        report.notes.append(f"removed the '{prefix}' prefix of every key")
    if layout == "imagenet_pvt":
        if not isinstance(target, PyramidVisionTransformer):
            raise ValueError(
                f"ImageNet PVT v1 weights fit the 'pvt_tiny' backbone only, not {target_name} ({type(target).__name__})"
            )
        source, report.resized, imagenet_notes = _adapt_imagenet_pvt(source, target.image_size)
        report.notes.extend(imagenet_notes)
    elif layout in ("timm_pvt_v2", "official_pvt_v2"):
        if isinstance(target, PyramidVisionTransformer):  # only the 1000-way head's bias would fit, by chance
            raise ValueError(f"PVT-v2 weights fit a 'pvt_v2_b*' backbone of their variant only, not {target_name} "
                             f"({type(target).__name__})")
        source, timm_notes = _adapt_timm_pvt_v2(source, set(target_state), layout)
        report.notes.extend(timm_notes)

    accepted: StateDict = {}
    mismatched_keys: set[str] = set()
    for key, value in source.items():
        if key not in target_state:
            report.unexpected.append(key)
            continue
        expected = target_state[key].shape
        if value.shape != expected and _is_position_embedding(key) and value.dim() == 3 \
                and value.shape[-1] == expected[-1] and math.isqrt(value.shape[1]) ** 2 == value.shape[1]:
            resized = resize_position_embedding(value, math.isqrt(expected[1]))
            report.notes.append(f"{key}: resized {tuple(value.shape)} -> {tuple(resized.shape)}")
            report.resized.append(key)
            value = resized
        if value.shape != expected:
            report.mismatched.append(f"{key} (checkpoint {list(value.shape)}, model {list(expected)})")
            mismatched_keys.add(key)
            continue
        accepted[key] = value
        report.loaded.append(key)
    report.missing = [key for key in target_state if key not in accepted and key not in mismatched_keys]
    return target, accepted, report


def load_into(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], strict: bool = False, prefix: str = DATA_PARALLEL_PREFIX
) -> LoadReport:
    """Adapt `state_dict` to `model` (or to `model.backbone`) and load what fits.

    - `prefix` (default `module.`, what DataParallel/DDP add) is removed when every key has
      it; pass '' to keep the keys as they are.
    - Backbone layouts (ImageNet PVT, timm/official PVT-v2), and native state dicts whose keys
      fit `model.backbone` better than `model`, go into `model.backbone` when the model has one.
    - Native position embeddings of another grid are resized bilinearly (listed in `resized`).
    strict=False loads every key whose name and shape match and reports the rest;
    strict=True raises `CheckpointMismatchError` (loading nothing) unless all keys match.
    Returns the `LoadReport`.
    """
    target, accepted, report = _plan_load(model, state_dict, prefix)
    if strict and not report.complete:
        raise CheckpointMismatchError(report)
    target.load_state_dict(accepted, strict=False)
    return report


def read_state_dict(path: str | Path) -> StateDict:
    """Read a state dict from a local file: `.safetensors`, or a torch file read by
    `common.training.checkpoints.load_state_dict_file` (weights only; unwraps {'state_dict': ...} and
    {'model': ...}; strips `module.`). Raises CheckpointError naming the file."""
    path = Path(path)
    if path.suffix != ".safetensors":
        return load_state_dict_file(path)
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"cannot read weights file {path}: {error}") from None


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> LoadReport:
    """Load pretrained backbone weights from a local file (any layout above) into `backbone`.

    Extra checkpoint keys (e.g. a classifier head the features-only backbone lacks) are
    reported and ignored; a backbone parameter the file does not provide, or provides with
    the wrong shape, raises `CheckpointMismatchError` naming the file.
    """
    target, accepted, report = _plan_load(backbone, read_state_dict(path))
    report.notes.append(f"read from {path}")
    if report.missing or report.mismatched:
        raise CheckpointMismatchError(report, source=str(path))
    target.load_state_dict(accepted, strict=False)
    return report
