"""Losses of the GAN and of NADS-Net.

GAN: adversarial (`GANLoss`), discriminator feature matching (`feature_matching_loss`),
VGG19 perceptual (`VGGLoss`). NADS-Net: `dice_bce_loss` for the seatbelt mask and
`nadsnet_loss` for a whole training step; under DDP both take `reducer=global_sums` (see the
DDP note above `dice_loss`).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable, Sequence, Union

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from common.parallel.devices import at_least_float32
from common.errors import CheckpointError

DiscriminatorOutput = Union[torch.Tensor, Sequence[Union[torch.Tensor, Sequence[torch.Tensor]]]]

GAN_MODES = ("hinge", "original", "ls", "w")


def _predictions_per_scale(predictions: DiscriminatorOutput) -> list[torch.Tensor]:
    """A tensor -> [it]; a list per scale of tensors or of layer lists -> the last of each."""
    if isinstance(predictions, torch.Tensor):
        return [predictions]
    return [p[-1] if isinstance(p, (list, tuple)) else p for p in predictions]


class GANLoss(nn.Module):
    """Adversarial loss, averaged over the discriminator's scales.

    Modes (x = a scale's prediction, logits):
      hinge:    D real mean(relu(1 - x)); D fake mean(relu(1 + x)); G -mean(x)
      original: BCE-with-logits against 1 (real) / 0 (fake)
      ls:       MSE against 1 (real) / 0 (fake)
      w:        -mean(x) (real) / mean(x) (fake)
    For the generator (for_discriminator=False), hinge requires target_is_real=True.
    """

    def __init__(self, mode: str = "hinge") -> None:
        super().__init__()
        if mode not in GAN_MODES:
            raise ValueError(f"GAN loss mode must be one of {GAN_MODES}, got {mode!r}")
        self.mode = mode

    def _single(self, x: torch.Tensor, target_is_real: bool, for_discriminator: bool) -> torch.Tensor:
        if self.mode == "hinge":
            if for_discriminator:
                return F.relu(1 - x).mean() if target_is_real else F.relu(1 + x).mean()
            if not target_is_real:
                raise ValueError("the hinge loss for the generator needs target_is_real=True")
            return -x.mean()
        if self.mode == "original":
            target = torch.full_like(x, 1.0 if target_is_real else 0.0)
            return F.binary_cross_entropy_with_logits(x, target)
        if self.mode == "ls":
            target = torch.full_like(x, 1.0 if target_is_real else 0.0)
            return F.mse_loss(x, target)
        return -x.mean() if target_is_real else x.mean()

    def forward(
        self, predictions: DiscriminatorOutput, target_is_real: bool, for_discriminator: bool = True
    ) -> torch.Tensor:
        """predictions: D's output (list per scale of layer lists; the last layer is used),
        a list of per-scale tensors, or one tensor. Returns a scalar: mean over scales, in
        float32 or wider (under bf16 autocast D's logits are bfloat16; their mean is taken in
        float32, as autocast does for the other losses)."""
        per_scale = _predictions_per_scale(predictions)
        losses = [self._single(at_least_float32(x), target_is_real, for_discriminator) for x in per_scale]
        return torch.stack(losses).mean()


def feature_matching_loss(
    fake_outputs: Sequence[Sequence[torch.Tensor]],
    real_outputs: Sequence[Sequence[torch.Tensor]],
    lambda_feat: float = 10.0,
) -> torch.Tensor:
    """Discriminator feature matching: sum over scales and over all layers but the last
    (the prediction) of L1(fake, real.detach()) * lambda_feat / num_D. Scalar."""
    if len(fake_outputs) != len(real_outputs) or len(fake_outputs) == 0:
        raise ValueError(
            f"need the same non-zero number of scales, got {len(fake_outputs)} fake and {len(real_outputs)} real"
        )
    num_d = len(fake_outputs)
    terms = [
        F.l1_loss(fake, real.detach())
        for fake_layers, real_layers in zip(fake_outputs, real_outputs)
        for fake, real in zip(fake_layers[:-1], real_layers[:-1])
    ]
    if not terms:
        return fake_outputs[0][-1].new_zeros(())
    return torch.stack(terms).sum() * (lambda_feat / num_d)


# ---------------------------------------------------------------------------------------
# VGG19 perceptual loss

VGG19_CACHE_FILENAME = "vgg19-dcbb9e9d.pth"  # torchvision's ImageNet VGG19 (IMAGENET1K_V1)
# End indices (exclusive) of torchvision vgg19().features slices: relu1_1, relu2_1, relu3_1,
# relu4_1, relu5_1.
VGG19_SLICE_ENDS = (2, 7, 12, 21, 30)
VGG_LAYER_WEIGHTS = (1.0 / 32, 1.0 / 16, 1.0 / 8, 1.0 / 4, 1.0)


def vgg19_cache_path() -> Path:
    """Where torchvision caches the ImageNet VGG19 weights: <torch hub dir>/checkpoints/."""
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG19_CACHE_FILENAME


class VGG19Features(nn.Module):
    """Frozen VGG19 feature extractor: x (B, 3, H, W) ImageNet-normalised RGB -> the five maps
    relu1_1 (B, 64, H, W), relu2_1 (128, H/2), relu3_1 (256, H/4), relu4_1 (512, H/8),
    relu5_1 (512, H/16).

    Args:
        weights_path: a torchvision VGG19 state dict (keys 'features.N.*'; the classifier is
            ignored), or None for random weights (torchvision's VGG init, for tests and
            benchmarks). Never downloads.
    """

    def __init__(self, weights_path: str | Path | None = None) -> None:
        super().__init__()
        # The layers of torchvision.models.vgg19(weights=None).features, built without the
        # 120 M-value classifier (seconds of init, then thrown away).
        features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["E"], batch_norm=False)
        if weights_path is None:
            for module in features.modules():
                if isinstance(module, nn.Conv2d):  # as torchvision's VGG.__init__
                    nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                    nn.init.zeros_(module.bias)
        else:
            state = torch.load(weights_path, map_location="cpu", weights_only=True)
            prefix = "features."
            feature_state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            if not feature_state:
                raise CheckpointError(f"{weights_path}: no 'features.*' keys; expected a torchvision VGG19 state dict")
            features.load_state_dict(feature_state, strict=True)
        starts = (0,) + VGG19_SLICE_ENDS[:-1]
        self.slices = nn.ModuleList(
            nn.Sequential(*[features[i] for i in range(start, end)])
            for start, end in zip(starts, VGG19_SLICE_ENDS)
        )
        for parameter in self.parameters():
            parameter.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "VGG19Features":
        """Always stays in eval mode (a fixed feature extractor)."""
        return super().train(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for block in self.slices:
            x = block(x)
            features.append(x)
        return features


class VGGLoss(nn.Module):
    """VGG19 perceptual loss: sum_i w_i L1(vgg_i(fake), vgg_i(real)), w = 1/32 .. 1.

    Args:
        weights: 'auto' or None: torchvision's cached ImageNet file `vgg19-dcbb9e9d.pth`
            under torch.hub.get_dir()/checkpoints if present; a path: that file (must
            exist); 'random': random weights on purpose (tests, benchmarks).
    When 'auto' finds no file, one warning says so, `available` is False and calling the loss
    raises: the caller must report the term as off (never a silent 0).
    """

    def __init__(self, weights: str | Path | None = "auto") -> None:
        super().__init__()
        self.vgg: VGG19Features | None = None
        self.weights_source: str
        if weights == "random":
            self.vgg = VGG19Features(None)
            self.weights_source = "random"
        elif weights is None or weights == "auto":
            path = vgg19_cache_path()
            if path.is_file():
                self.vgg = VGG19Features(path)
                self.weights_source = str(path)
            else:
                self.weights_source = "none"
                warnings.warn(
                    f"VGG19 perceptual loss is OFF: no ImageNet VGG19 weights at {path}. "
                    f"To turn it on, put torchvision's {VGG19_CACHE_FILENAME} there (or set "
                    f"TORCH_HOME) or pass the file's path explicitly as the VGG weights.",
                    stacklevel=2,
                )
        else:
            path = Path(weights)
            if not path.is_file():
                raise FileNotFoundError(f"VGG19 weights file not found: {path}")
            self.vgg = VGG19Features(path)
            self.weights_source = str(path)

    @property
    def available(self) -> bool:
        """True when the loss can be computed (weights loaded, or random on purpose)."""
        return self.vgg is not None

    def forward(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """fake, real (B, 3, H, W) ImageNet-normalised RGB -> scalar. No gradient to `real`."""
        if self.vgg is None:
            raise RuntimeError("VGG19 perceptual loss is off (no weights); check VGGLoss.available first")
        fake_features = self.vgg(fake)
        with torch.no_grad():
            real_features = self.vgg(real)
        terms = [
            weight * F.l1_loss(f, r.detach())
            for weight, f, r in zip(VGG_LAYER_WEIGHTS, fake_features, real_features)
        ]
        return torch.stack(terms).sum()


# ---------------------------------------------------------------------------------------
# NADS-Net


# Under DistributedDataParallel over P processes (local batches of B_j samples, global batch
# B = sum_j B_j), DDP averages gradients: it follows (1/P) sum_j grad L_j. For this to be the
# gradient of the global-batch loss L:
# - a term that is a sum over samples divided by a global normaliser M (SSE / B: M = B;
#   BCE mean: M = the global number of seatbelt pixels) must be, on process j,
#       L_j = P * (local sum) / M,
#   which is the local mean (today's code) exactly when all B_j are equal, and otherwise is not;
# - the Dice term 1 - (2 I + 1) / (S_p + S_t + 1) is not a sum over samples: it must be
#   computed on every process from the global sums I, S_p, S_t, through an all-reduce whose
#   backward sums the gradients over the processes (`common.parallel.distributed_ops.global_sums`).
# Passing `reducer=global_sums` does both: every sum (and the normalisers M) is reduced over
# the processes, so each process's loss value equals the global-batch loss, and the reducer's
# backward supplies the factor P of the first rule. Without a reducer nothing changes.
Reducer = Callable[[torch.Tensor], torch.Tensor]


def _dice_from_sums(
    intersection: torch.Tensor, pred_sum: torch.Tensor, target_sum: torch.Tensor, smooth: float
) -> torch.Tensor:
    return 1 - (2 * intersection + smooth) / (pred_sum + target_sum + smooth)


def _reduce_scalars(reducer: Reducer, scalars: Sequence[torch.Tensor]) -> torch.Tensor:
    """The scalars, stacked in float64 (counts stay exact past 2**24), reduced by `reducer`.
    (k,) float64."""
    return reducer(torch.stack([s.double() for s in scalars]))


def dice_loss(
    pred: torch.Tensor, target: torch.Tensor, smooth: float = 1.0, reducer: Reducer | None = None
) -> torch.Tensor:
    """1 - (2 sum(p t) + smooth) / (sum p + sum t + smooth) over all elements. Scalar.

    pred: probabilities in [0, 1], target: {0, 1} (or soft), same number of elements.
    reducer: None, or a differentiable sum over processes of a (3,) tensor (e.g.
    `common.parallel.distributed_ops.global_sums`): the three sums are then those of the global batch
    (see the DDP note above).
    """
    p = pred.reshape(-1).float()
    t = target.reshape(-1).float()
    if reducer is None:
        return _dice_from_sums((p * t).sum(), p.sum(), t.sum(), smooth)
    intersection, pred_sum, target_sum = _reduce_scalars(reducer, [(p * t).sum(), p.sum(), t.sum()])
    return _dice_from_sums(intersection, pred_sum, target_sum, smooth).float()


def _seatbelt_local_sums(pred: torch.Tensor, target: torch.Tensor) -> list[torch.Tensor]:
    """[BCE summed, sum(p t), sum p, sum t, number of values] of this process, float32 scalars."""
    with torch.autocast(device_type=pred.device.type, enabled=False):
        p = pred.reshape(-1).float()
        t = target.reshape(-1).float()
        bce_sum = F.binary_cross_entropy(p, t, reduction="sum")
        return [bce_sum, (p * t).sum(), p.sum(), t.sum(), p.new_tensor(float(p.numel()))]


def _dice_bce_from_sums(sums: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(BCE mean, Dice loss), float32 scalars, from the five sums of `_seatbelt_local_sums`."""
    bce_sum, intersection, pred_sum, target_sum, count = sums.unbind()
    return (bce_sum / count).float(), _dice_from_sums(intersection, pred_sum, target_sum, 1.0).float()


def _dice_bce_parts(
    pred: torch.Tensor, target: torch.Tensor, reducer: Reducer | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(BCE, Dice loss) in float32 with autocast off (binary_cross_entropy is not autocast-safe)."""
    if reducer is not None:
        return _dice_bce_from_sums(_reduce_scalars(reducer, _seatbelt_local_sums(pred, target)))
    with torch.autocast(device_type=pred.device.type, enabled=False):
        p = pred.reshape(-1).float()
        t = target.reshape(-1).float()
        return F.binary_cross_entropy(p, t), dice_loss(p, t)


def dice_bce_loss(pred: torch.Tensor, target: torch.Tensor, reducer: Reducer | None = None) -> torch.Tensor:
    """BCE(p, t, mean) + Dice loss on the flattened tensors. Scalar, float32.

    pred: probabilities in [0, 1] (the seatbelt head ends in (tanh + 1) / 2); target in [0, 1].
    The log terms are clamped at -100 inside F.binary_cross_entropy, as nn.BCELoss does.
    reducer: None (this process's batch), or a differentiable sum over processes (e.g.
    `common.parallel.distributed_ops.global_sums`): BCE and Dice of the global batch, one collective
    (see the DDP note above).
    """
    bce, dice = _dice_bce_parts(pred, target, reducer)
    return bce + dice


def _global_nadsnet_terms(
    pred_heatmaps: torch.Tensor,
    pred_pafs: torch.Tensor,
    pred_seatbelt: torch.Tensor | None,
    heatmaps: torch.Tensor,
    pafs: torch.Tensor,
    seatbelt: torch.Tensor | None,
    reducer: Reducer,
) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
    """(SSE(heatmaps)/B, SSE(PAFs)/B, (BCE, Dice) or None) of the global batch, all from one
    reduction of [SSE heatmaps, SSE PAFs, B, seatbelt sums...]."""
    local = [
        F.mse_loss(pred_heatmaps, heatmaps, reduction="sum"),
        F.mse_loss(pred_pafs, pafs, reduction="sum"),
        heatmaps.new_tensor(float(heatmaps.shape[0])),
    ]
    if pred_seatbelt is not None:
        local += _seatbelt_local_sums(pred_seatbelt, seatbelt)
    sums = _reduce_scalars(reducer, local)
    dtype = local[0].dtype
    heatmap_loss, paf_loss = (sums[0] / sums[2]).to(dtype), (sums[1] / sums[2]).to(dtype)
    seatbelt_parts = None if pred_seatbelt is None else _dice_bce_from_sums(sums[3:])
    return heatmap_loss, paf_loss, seatbelt_parts


def nadsnet_loss(
    pred_heatmaps: torch.Tensor,
    pred_pafs: torch.Tensor,
    pred_seatbelt: torch.Tensor | None,
    heatmaps: torch.Tensor,
    pafs: torch.Tensor,
    seatbelt: torch.Tensor | None,
    seatbelt_weight: float = 500.0,
    reducer: Reducer | None = None,
    heatmap_weight: float = 1.0,
) -> dict[str, torch.Tensor]:
    """NADS-Net training loss: SSE(heatmaps)/B + SSE(PAFs)/B + 500 * DiceBCE(seatbelt)
    (`heatmap_weight` x the first term: 1 in the seed).

    Shapes: heatmaps (B, 9|10, S/4, S/4), PAFs (B, 16, S/4, S/4), seatbelt (B, 1, S, S) in [0, 1].
    Returns scalars: 'total', 'heatmap' (SSE/B), 'paf' (SSE/B) and, when pred_seatbelt is
    given, 'seatbelt' (the unweighted Dice-BCE) and 'dice' (its Dice-loss part). Without a
    seatbelt head (pred_seatbelt None) the seatbelt term is absent from 'total' and the dict.

    reducer: None (this process's batch), or a differentiable sum over processes (e.g.
    `common.parallel.distributed_ops.global_sums`; one collective per call): every term is then that
    of the global batch (B the global batch size), the same value on every process, and DDP's
    gradient average is the global batch's gradient, for unequal local batches too (see the
    DDP note above). Without a reducer under DDP, SSE/B and BCE are right only for equal local
    batches and the Dice term never is.
    """
    if pred_heatmaps.shape != heatmaps.shape or pred_pafs.shape != pafs.shape:
        raise ValueError(
            f"prediction/target shapes differ: heatmaps {tuple(pred_heatmaps.shape)} vs {tuple(heatmaps.shape)}, "
            f"PAFs {tuple(pred_pafs.shape)} vs {tuple(pafs.shape)}"
        )
    if pred_seatbelt is not None and seatbelt is None:
        raise ValueError("pred_seatbelt given but no seatbelt target")
    if reducer is None:
        batch = heatmaps.shape[0]
        heatmap_loss = F.mse_loss(pred_heatmaps, heatmaps, reduction="sum") / batch
        paf_loss = F.mse_loss(pred_pafs, pafs, reduction="sum") / batch
        seatbelt_parts = None if pred_seatbelt is None else _dice_bce_parts(pred_seatbelt, seatbelt)
    else:
        heatmap_loss, paf_loss, seatbelt_parts = _global_nadsnet_terms(
            pred_heatmaps, pred_pafs, pred_seatbelt, heatmaps, pafs, seatbelt, reducer
        )
    if seatbelt_parts is None:
        return {"total": heatmap_weight * heatmap_loss + paf_loss, "heatmap": heatmap_loss, "paf": paf_loss}
    bce, dice = seatbelt_parts
    seatbelt_loss = bce + dice
    return {
        "total": heatmap_weight * heatmap_loss + paf_loss + seatbelt_weight * seatbelt_loss,
        "heatmap": heatmap_loss,
        "paf": paf_loss,
        "seatbelt": seatbelt_loss,
        "dice": dice,
    }
