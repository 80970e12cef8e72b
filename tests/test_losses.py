"""GAN, feature-matching, VGG perceptual and NADS-Net losses against hand-computed values.

The VGG19 tests use random weights on purpose (never the ImageNet file, never a download) and
point the torch hub directory at a temporary folder.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from common.models.losses import (
    VGG19_CACHE_FILENAME,
    VGG_LAYER_WEIGHTS,
    GANLoss,
    VGG19Features,
    VGGLoss,
    dice_bce_loss,
    dice_loss,
    feature_matching_loss,
    nadsnet_loss,
)


def discriminator_output(*predictions: list[float]) -> list[list[torch.Tensor]]:
    """A multi-scale D output: per scale [junk feature, prediction]; the junk must be ignored."""
    return [[torch.full((1, 4), 123.0), torch.tensor(p).view(1, 1, 1, -1)] for p in predictions]


# Two scales: predictions (-0.5, 2.0) and (0.5,).
SCALES = ([-0.5, 2.0], [0.5])


@pytest.mark.parametrize(
    "mode, target_is_real, for_discriminator, expected",
    [
        # relu(1 - x): (1.5 + 0) / 2 = 0.75 and 0.5 -> mean 0.625
        ("hinge", True, True, (0.75 + 0.5) / 2),
        # relu(1 + x): (0.5 + 3) / 2 = 1.75 and 1.5
        ("hinge", False, True, (1.75 + 1.5) / 2),
        # -mean(x): -0.75 and -0.5
        ("hinge", True, False, (-0.75 - 0.5) / 2),
        # BCE with logits against 1: softplus(-x)
        ("original", True, True, ((math.log1p(math.exp(0.5)) + math.log1p(math.exp(-2.0))) / 2 + math.log1p(math.exp(-0.5))) / 2),
        ("original", False, True, ((math.log1p(math.exp(-0.5)) + math.log1p(math.exp(2.0))) / 2 + math.log1p(math.exp(0.5))) / 2),
        ("original", True, False, ((math.log1p(math.exp(0.5)) + math.log1p(math.exp(-2.0))) / 2 + math.log1p(math.exp(-0.5))) / 2),
        # MSE to 1 / to 0
        ("ls", True, True, ((2.25 + 1.0) / 2 + 0.25) / 2),
        ("ls", False, True, ((0.25 + 4.0) / 2 + 0.25) / 2),
        # -mean / mean
        ("w", True, True, (-0.75 - 0.5) / 2),
        ("w", False, True, (0.75 + 0.5) / 2),
    ],
)
def test_gan_loss_hand_values(mode, target_is_real, for_discriminator, expected):
    loss = GANLoss(mode)(discriminator_output(*SCALES), target_is_real, for_discriminator)
    assert loss.dim() == 0
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_gan_loss_accepts_a_single_tensor_and_per_scale_tensors():
    hinge = GANLoss("hinge")
    x = torch.tensor([[-0.5, 2.0]])
    assert hinge(x, True, True).item() == pytest.approx(0.75)
    assert hinge([x, torch.tensor([0.5])], True, True).item() == pytest.approx(0.625)


def test_gan_loss_rejects_fake_target_for_hinge_generator_and_unknown_modes():
    with pytest.raises(ValueError, match="target_is_real"):
        GANLoss("hinge")(torch.zeros(1), False, for_discriminator=False)
    with pytest.raises(ValueError, match="mode"):
        GANLoss("hinged")


def test_gan_loss_gradient_reaches_every_scale():
    predictions = [torch.zeros(1, 1, 2, 2, requires_grad=True), torch.zeros(1, 1, 1, 1, requires_grad=True)]
    GANLoss("hinge")([[p] for p in predictions], True, for_discriminator=False).backward()
    # -mean over each scale, then mean over the 2 scales.
    assert torch.allclose(predictions[0].grad, torch.full((1, 1, 2, 2), -1 / 8))
    assert torch.allclose(predictions[1].grad, torch.full((1, 1, 1, 1), -1 / 2))


def test_feature_matching_hand_values_ignore_predictions_and_detach_real():
    real = [[torch.zeros(2, 3, requires_grad=True), torch.zeros(4, requires_grad=True), torch.zeros(1)] for _ in range(2)]
    fake = [
        [torch.full((2, 3), 1.0, requires_grad=True), torch.full((4,), -2.0), torch.full((1,), 99.0)],
        [torch.full((2, 3), 3.0), torch.tensor([4.0, 4.0, -4.0, 4.0]), torch.full((1,), -99.0)],
    ]
    loss = feature_matching_loss(fake, real, lambda_feat=10.0)
    # (1 + 2 + 3 + 4) * 10 / 2 scales; the last layer (prediction) does not count.
    assert loss.item() == pytest.approx(50.0)
    loss.backward()
    assert real[0][0].grad is None and real[1][1].grad is None
    assert torch.allclose(fake[0][0].grad, torch.full((2, 3), 10 / 2 / 6))


def test_feature_matching_rejects_mismatched_scales():
    with pytest.raises(ValueError, match="scales"):
        feature_matching_loss([[torch.zeros(1), torch.zeros(1)]], [])


# ---------------------------------------------------------------------------------------
# VGG19


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    """torch.hub.get_dir() -> an empty temporary folder (no cached weights)."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    return tmp_path


def test_vgg19_features_slices_end_at_relu_x_1_and_are_frozen():
    torch.manual_seed(0)
    features = VGG19Features(None)
    assert [sum(isinstance(m, torch.nn.Conv2d) for m in s) for s in features.slices] == [1, 2, 2, 4, 4]
    assert all(isinstance(s[-1], torch.nn.ReLU) for s in features.slices)
    assert all(not p.requires_grad for p in features.parameters())
    features.train()
    assert not features.training and not any(m.training for m in features.modules())
    maps = features(torch.randn(1, 3, 32, 32))
    assert [tuple(m.shape) for m in maps] == [(1, 64, 32, 32), (1, 128, 16, 16), (1, 256, 8, 8), (1, 512, 4, 4), (1, 512, 2, 2)]


def test_vgg_loss_random_weights_values_and_gradients():
    torch.manual_seed(0)
    loss_fn = VGGLoss("random")
    assert loss_fn.available and loss_fn.weights_source == "random"
    fake = torch.randn(2, 3, 32, 32, requires_grad=True)
    real = torch.randn(2, 3, 32, 32, requires_grad=True)
    loss = loss_fn(fake, real)
    expected = sum(
        w * F.l1_loss(f, r) for w, f, r in zip(VGG_LAYER_WEIGHTS, loss_fn.vgg(fake), loss_fn.vgg(real))
    )
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5) and loss.item() > 0
    loss.backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0
    assert real.grad is None  # real features are computed without a graph
    assert all(p.grad is None for p in loss_fn.parameters())
    assert loss_fn(real.detach(), real.detach()).item() == 0.0
    assert VGG_LAYER_WEIGHTS == (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)


@pytest.mark.parametrize("weights", ["auto", None])
def test_vgg_loss_without_cached_weights_is_off_with_one_warning(empty_hub, weights):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loss_fn = VGGLoss(weights)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "OFF" in message and VGG19_CACHE_FILENAME in message and str(empty_hub) in message
    assert not loss_fn.available
    with pytest.raises(RuntimeError, match="off"):
        loss_fn(torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 32, 32))


def _write_torchvision_style_weights(path, seed: int = 1) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    features = VGG19Features(None)
    state = {}
    # torchvision numbers the layers of `features` 0..36; our slices cover 0..29 in order.
    flat = [m for block in features.slices for m in block]
    for index, module in enumerate(flat):
        if isinstance(module, torch.nn.Conv2d):
            state[f"features.{index}.weight"] = module.weight.detach().clone()
            state[f"features.{index}.bias"] = module.bias.detach().clone()
    for index, (c_in, c_out) in zip((30, 32, 34), ((512, 512), (512, 512), (512, 512))):
        state[f"features.{index}.weight"] = torch.randn(c_out, c_in, 3, 3) * 0.01
        state[f"features.{index}.bias"] = torch.zeros(c_out)
    state["classifier.6.weight"] = torch.zeros(10, 4)  # ignored
    torch.save(state, path)
    return state


def test_vgg_loss_loads_cached_and_explicit_weights(empty_hub, tmp_path):
    (empty_hub / "checkpoints").mkdir()
    cached = empty_hub / "checkpoints" / VGG19_CACHE_FILENAME
    state = _write_torchvision_style_weights(cached)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning when the weights are found
        auto = VGGLoss("auto")
    assert auto.available and auto.weights_source == str(cached)
    assert torch.equal(auto.vgg.slices[0][0].weight, state["features.0.weight"])
    assert torch.equal(auto.vgg.slices[4][-2].weight, state["features.28.weight"])  # conv5_1

    explicit = VGGLoss(cached)
    assert torch.equal(explicit.vgg.slices[2][3].weight, state["features.10.weight"])  # conv3_1
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        VGGLoss(tmp_path / "missing.pth")


# ---------------------------------------------------------------------------------------
# NADS-Net


def test_dice_bce_hand_values():
    pred = torch.tensor([0.5, 0.5, 0.5, 0.5]).view(1, 1, 2, 2)
    target = torch.tensor([1.0, 0.0, 1.0, 0.0]).view(1, 1, 2, 2)
    # BCE = log 2; Dice = 1 - (2 * 1 + 1) / (2 + 2 + 1) = 0.4
    assert dice_loss(pred, target).item() == pytest.approx(0.4)
    assert dice_bce_loss(pred, target).item() == pytest.approx(math.log(2) + 0.4, rel=1e-6)

    pred = torch.tensor([0.9, 0.2])
    target = torch.tensor([1.0, 0.0])
    bce = -(math.log(0.9) + math.log(0.8)) / 2
    dice = 1 - (2 * 0.9 + 1) / (1.1 + 1 + 1)
    assert dice_bce_loss(pred, target).item() == pytest.approx(bce + dice, rel=1e-6)
    # A perfect prediction: BCE 0 and Dice 0.
    assert dice_bce_loss(target, target).item() == pytest.approx(0.0, abs=1e-6)


def test_dice_bce_saturated_predictions_stay_finite():
    pred = torch.tensor([0.0, 1.0], requires_grad=True)
    loss = dice_bce_loss(pred, torch.tensor([1.0, 0.0]))
    assert loss.item() == pytest.approx(100.0 + 1 - 1 / 3, rel=1e-4)  # log clamped at -100
    loss.backward()
    assert torch.isfinite(pred.grad).all()


def test_nadsnet_loss_hand_values():
    heatmaps = torch.ones(2, 9, 2, 2)
    pafs = torch.zeros(2, 16, 2, 2)
    seatbelt = torch.tensor([1.0, 0.0, 1.0, 0.0]).view(1, 1, 2, 2).repeat(2, 1, 1, 1)
    pred_heatmaps = torch.zeros(2, 9, 2, 2, requires_grad=True)
    pred_pafs = torch.full((2, 16, 2, 2), 0.5)
    pred_seatbelt = torch.full((2, 1, 2, 2), 0.5, requires_grad=True)

    losses = nadsnet_loss(pred_heatmaps, pred_pafs, pred_seatbelt, heatmaps, pafs, seatbelt)
    assert set(losses) == {"total", "heatmap", "paf", "seatbelt", "dice"}
    assert losses["heatmap"].item() == pytest.approx(2 * 9 * 4 / 2)  # SSE / B = 36
    assert losses["paf"].item() == pytest.approx(0.25 * 2 * 16 * 4 / 2)  # 16
    assert losses["dice"].item() == pytest.approx(1 - (2 * 2 + 1) / (4 + 4 + 1))
    dice_bce = math.log(2) + 1 - 5 / 9
    assert losses["seatbelt"].item() == pytest.approx(dice_bce, rel=1e-6)
    assert losses["total"].item() == pytest.approx(36 + 16 + 500 * dice_bce, rel=1e-6)
    losses["total"].backward()
    assert pred_heatmaps.grad.abs().sum() > 0 and pred_seatbelt.grad.abs().sum() > 0

    without = nadsnet_loss(pred_heatmaps.detach(), pred_pafs, None, heatmaps, pafs, None, seatbelt_weight=500.0)
    assert set(without) == {"total", "heatmap", "paf"}
    assert without["total"].item() == pytest.approx(52.0)


def test_nadsnet_loss_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="heatmaps"):
        nadsnet_loss(torch.zeros(1, 10, 2, 2), torch.zeros(1, 16, 2, 2), None, torch.zeros(1, 9, 2, 2), torch.zeros(1, 16, 2, 2), None)
