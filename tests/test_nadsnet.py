"""NADS-Net, its FPN and the PVT-tiny backbone.

All networks here have random weights on purpose: the tests check shapes, ranges, wiring
and the exact state_dict layout the seed saved. The reference key listing
`tests/data/seed_state_dict_keys.txt` was written from the seed's own networks.
"""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import pytest
import torch

from common.models.nadsnet import FPN, MapBranch, NADSNet
from common.models.pvt import SpatialReductionAttention, pvt_tiny

LISTING = Path(__file__).parent / "data" / "seed_state_dict_keys.txt"
SECTIONS = {9: "nadsnet_pvt_tiny_9_heatmaps", 10: "nadsnet_pvt_tiny_10_heatmaps_with_background"}


def seed_listing(section: str) -> dict[str, list[int]]:
    """Key -> shape, in file order, of one section of the seed's state_dict listing."""
    entries: dict[str, list[int]] = {}
    inside = False
    for line in LISTING.read_text().splitlines():
        if line.startswith("["):
            inside = line == f"[{section}]"
        elif inside and line and not line.startswith("#"):
            key, shape = line.split("\t")
            entries[key] = ast.literal_eval(shape)
    assert entries, f"section {section} not found in {LISTING}"
    return entries


@pytest.fixture(scope="module")
def seed_models() -> dict[int, NADSNet]:
    """The seed configuration (384 px) with 9 and 10 heatmaps, random weights."""
    torch.manual_seed(0)
    return {n: NADSNet(num_heatmaps=n, image_size=384) for n in SECTIONS}


@pytest.mark.parametrize("num_heatmaps", sorted(SECTIONS))
def test_state_dict_equals_seed_listing(seed_models, num_heatmaps):
    listing = seed_listing(SECTIONS[num_heatmaps])
    state = seed_models[num_heatmaps].state_dict()
    assert list(state) == list(listing)  # same keys, same order
    assert {key: list(value.shape) for key, value in state.items()} == listing


@pytest.mark.parametrize("num_heatmaps", sorted(SECTIONS))
def test_parameter_count_equals_seed_listing(seed_models, num_heatmaps):
    listing = seed_listing(SECTIONS[num_heatmaps])
    model = seed_models[num_heatmaps]
    expected = sum(math.prod(shape) for shape in listing.values())
    assert sum(value.numel() for value in model.state_dict().values()) == expected
    assert sum(p.numel() for p in model.parameters()) == expected  # no buffers
    assert expected == (29_630_658 if num_heatmaps == 9 else 29_630_915)
    # Frozen because unused: cls_token 512, final norm 1024, head 513000, output_layer_4 590080.
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == expected - 1_104_616


def assert_gradients_reach_exactly_the_trainable_parameters(
    model: NADSNet, image: torch.Tensor
) -> tuple[set[str], tuple[torch.Tensor, ...]]:
    """Backward through every output; return (names of the frozen parameters, the outputs)."""
    outputs = model(image)
    sum(output.square().mean() for output in outputs).backward()
    frozen = set()
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            assert parameter.grad is not None and torch.count_nonzero(parameter.grad) > 0, name
        else:
            assert parameter.grad is None, name
            frozen.add(name)
    return frozen, outputs


@pytest.mark.parametrize("fpn", ["seed", "standard"])
def test_every_trainable_parameter_gets_a_gradient(fpn):
    # DistributedDataParallel without find_unused_parameters needs exactly this.
    torch.manual_seed(11)
    model = NADSNet(image_size=64, fpn=fpn)
    frozen, _ = assert_gradients_reach_exactly_the_trainable_parameters(model, torch.randn(1, 3, 64, 64))
    unused_backbone = {"PVT.cls_token", "PVT.norm.weight", "PVT.norm.bias", "PVT.head.weight", "PVT.head.bias"}
    unused_fpn = {"FPN.output_layer_4.weight", "FPN.output_layer_4.bias"} if fpn == "seed" else set()
    assert frozen == unused_backbone | unused_fpn


@pytest.mark.parametrize("num_heatmaps", sorted(SECTIONS))
def test_seed_shaped_state_dict_loads_strict(seed_models, num_heatmaps):
    generator = torch.Generator().manual_seed(num_heatmaps)
    listing = seed_listing(SECTIONS[num_heatmaps])
    seed_state = {key: torch.randn(shape, generator=generator) for key, shape in listing.items()}
    model = seed_models[num_heatmaps]
    model.load_state_dict(seed_state, strict=True)
    assert torch.equal(model.PVT.pos_embed_4, seed_state["PVT.pos_embed_4"])
    assert torch.equal(model.keypoint_heatmap_branch.convs_on_feature_maps[4].bias,
                       seed_state["keypoint_heatmap_branch.convs_on_feature_maps.4.bias"])


def test_forward_shapes_and_ranges_128():
    torch.manual_seed(1)
    model = NADSNet(image_size=128).eval()
    image = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        heatmaps, pafs, seatbelt = model(image)
    assert heatmaps.shape == (2, 9, 32, 32)
    assert pafs.shape == (2, 16, 32, 32)
    assert seatbelt.shape == (2, 1, 128, 128)
    assert seatbelt.min() >= 0 and seatbelt.max() <= 1
    assert torch.isfinite(heatmaps).all() and torch.isfinite(pafs).all()
    # The two samples differ, so must their outputs (the batch is not mixed up or broadcast).
    assert not torch.allclose(heatmaps[0], heatmaps[1])

    # A large final bias saturates the tanh: the seatbelt output reaches, and never leaves, [0, 1].
    branch = model.seatbelt_segmentation_branch
    with torch.no_grad():
        pyramid = model.FPN(model.PVT(image[:1]))
        branch.final_conv2.bias.fill_(30.0)
        high = branch(pyramid)
        branch.final_conv2.bias.fill_(-30.0)
        low = branch(pyramid)
    assert high.max() <= 1 and high.min() > 0.999
    assert low.min() >= 0 and low.max() < 0.001


def test_forward_256_with_background_without_seatbelt_and_config_round_trip():
    # A 384 px forward is slow on a CPU, so the larger-size check runs at 256.
    torch.manual_seed(2)
    model = NADSNet(num_heatmaps=10, seatbelt=False, image_size=256, fpn="standard").eval()
    assert not hasattr(model, "seatbelt_segmentation_branch")
    assert not any(key.startswith("seatbelt") for key in model.state_dict())
    image = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        outputs = model(image)
    assert outputs.seatbelt is None  # a named tuple: (heatmaps, pafs, seatbelt)
    assert outputs.heatmaps.shape == (1, 10, 64, 64) and outputs[1].shape == (1, 16, 64, 64)

    config = json.loads(json.dumps(model.config()))
    assert config == {"num_heatmaps": 10, "num_pafs": 16, "seatbelt": False, "image_size": 256,
                      "backbone": "pvt_tiny", "fpn": "standard", "fpn_channels": 256, "head_channels": 128}
    rebuilt = NADSNet(**config)
    assert rebuilt.FPN.wiring == "standard" and rebuilt.config() == config
    rebuilt.load_state_dict(model.state_dict(), strict=True)


def test_pvt_feature_shapes_and_position_embeddings():
    for size in (128, 256):
        backbone = pvt_tiny(image_size=size)
        sides = [size // 4, size // 8, size // 16, size // 32]
        assert [tuple(backbone.position_embedding(i).shape) for i in range(1, 5)] == [
            (1, side * side, dim) for side, dim in zip(sides, (64, 128, 320, 512))
        ]
    with torch.no_grad():
        features = backbone(torch.randn(1, 3, 256, 256))
    assert [tuple(f.shape) for f in features] == [(1, 64, 64, 64), (1, 128, 32, 32), (1, 320, 16, 16), (1, 512, 8, 8)]


def test_pvt_rejects_other_input_size_and_bad_image_size():
    backbone = pvt_tiny(image_size=64)
    with pytest.raises(ValueError, match="64x64"):
        backbone(torch.randn(1, 3, 96, 96))
    with pytest.raises(ValueError, match="multiple of 32"):
        pvt_tiny(image_size=100)
    with pytest.raises(ValueError, match="multiple of 32"):
        NADSNet(image_size=200)


def test_pvt_init_and_layer_norm_eps():
    torch.manual_seed(4)
    backbone = pvt_tiny(image_size=64)
    # Truncated normal std 0.02 on a large matrix; Linear biases 0; LayerNorms 1 / 0.
    assert abs(backbone.block1[0].mlp.fc1.weight.std().item() - 0.02) < 0.002
    assert backbone.head.weight.abs().max() <= 2.0  # truncation at +-2 (absolute, as timm)
    assert torch.count_nonzero(backbone.block3[1].attn.kv.bias) == 0
    assert abs(backbone.pos_embed_1.std().item() - 0.02) < 0.002
    assert torch.all(backbone.block2[0].norm1.weight == 1)
    assert backbone.block2[0].norm1.eps == 1e-6 and backbone.norm.eps == 1e-6
    assert backbone.patch_embed2.norm.eps == 1e-5 and backbone.block1[0].attn.norm.eps == 1e-5
    assert not hasattr(backbone.block4[0].attn, "sr")  # sr ratio 1 at stage 4


def test_spatial_reduction_attention_matches_explicit_softmax():
    """SDPA reproduces softmax(q k^T / sqrt(d)) v with the [keys | values] split of the kv
    projection that ImageNet PVT weights rely on."""
    torch.manual_seed(5)
    attention = SpatialReductionAttention(dim=20, num_heads=2, sr_ratio=2).eval()
    height = width = 4
    x = torch.randn(3, height * width, 20)
    with torch.no_grad():
        got = attention(x, (height, width))
        heads, head_dim = 2, 10
        q = attention.q(x).reshape(3, -1, heads, head_dim).permute(0, 2, 1, 3)
        reduced = attention.sr(x.permute(0, 2, 1).reshape(3, 20, height, width)).reshape(3, 20, -1).permute(0, 2, 1)
        kv = attention.kv(attention.norm(reduced))
        k = kv[..., :20].reshape(3, -1, heads, head_dim).permute(0, 2, 1, 3)
        v = kv[..., 20:].reshape(3, -1, heads, head_dim).permute(0, 2, 1, 3)
        weights = (q @ k.transpose(-2, -1) * head_dim**-0.5).softmax(dim=-1)
        expected = attention.proj((weights @ v).transpose(1, 2).reshape(3, -1, 20))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_fpn_seed_wiring_ignores_output_4_standard_uses_it():
    torch.manual_seed(6)
    features = [torch.randn(1, c, s, s) for c, s in ((64, 16), (128, 8), (320, 4), (512, 2))]
    seed = FPN((64, 128, 320, 512), wiring="seed")
    standard = FPN((64, 128, 320, 512), wiring="standard")
    standard.load_state_dict(seed.state_dict())
    with torch.no_grad():
        seed_before, standard_before = seed(features), standard(features)
        assert [tuple(p.shape) for p in seed_before] == [(1, 256, s, s) for s in (16, 8, 4, 2)]
        # Same weights, different wiring -> different pyramids.
        assert not torch.allclose(seed_before[0], standard_before[0])
        # The seed's P4 is relu(lateral_4(C4)) itself.
        torch.testing.assert_close(seed_before[2], torch.relu(seed.lateral_layer_4(features[2])))
        for fpn in (seed, standard):
            fpn.output_layer_4.weight.add_(0.5)
        seed_after, standard_after = seed(features), standard(features)
    for before, after in zip(seed_before, seed_after):
        assert torch.equal(before, after)
    assert not torch.allclose(standard_before[2], standard_after[2])


def test_fpn_seed_wiring_matches_spec_formula():
    torch.manual_seed(7)
    fpn = FPN((8, 16, 24, 32), wiring="seed")
    c2, c3, c4, c5 = (torch.randn(1, c, s, s) for c, s in ((8, 16), (16, 8), (24, 4), (32, 2)))
    relu, up = torch.relu, torch.nn.functional.interpolate
    with torch.no_grad():
        p2, p3, p4, p5 = fpn([c2, c3, c4, c5])
        l3, l4 = relu(fpn.lateral_layer_3(c3)), relu(fpn.lateral_layer_4(c4))
        torch.testing.assert_close(p5, fpn.output_layer_5(relu(fpn.lateral_layer_5(c5))))
        torch.testing.assert_close(p3, fpn.output_layer_3(l3 + up(l4, scale_factor=2, mode="nearest")))
        l2 = relu(fpn.lateral_layer_2(c2))
        torch.testing.assert_close(p2, fpn.output_layer_2(l2 + up(l3, scale_factor=2, mode="nearest")))


def test_fpn_and_head_init_is_normal_0_01():
    torch.manual_seed(9)
    fpn, branch = FPN((64, 128, 320, 512)), MapBranch(16)
    weight = branch.convs_on_feature_maps[0].weight  # 512 x 512 x 3 x 3 values
    assert abs(weight.std().item() - 0.01) < 0.0005 and abs(weight.mean().item()) < 0.0005
    assert torch.count_nonzero(fpn.output_layer_2.bias) == 0 and torch.count_nonzero(branch.convs_on_P2[2].bias) == 0
    assert abs(fpn.lateral_layer_5.weight.std().item() - 0.01) < 0.001
    with pytest.raises(ValueError, match="wiring"):
        FPN((64, 128, 320, 512), wiring="textbook")


def test_timm_pvt_v2_backbone():
    torch.manual_seed(10)
    model = NADSNet(image_size=128, backbone="pvt_v2_b0").eval()
    assert model.backbone is model.PVT
    assert model.feature_channels == (32, 64, 160, 256)
    assert [model.FPN.lateral_layer_2.in_channels, model.FPN.lateral_layer_3.in_channels,
            model.FPN.lateral_layer_4.in_channels, model.FPN.lateral_layer_5.in_channels] == [32, 64, 160, 256]
    with torch.no_grad():
        features = model.PVT(torch.randn(1, 3, 128, 128))
    assert [tuple(f.shape) for f in features] == [(1, 32, 32, 32), (1, 64, 16, 16), (1, 160, 8, 8), (1, 256, 4, 4)]
    # PVT-v2 has no position embeddings: the same network runs at another multiple of 32.
    # Only the seed FPN's output_layer_4 is unused with this backbone (timm drops the classifier).
    frozen, outputs = assert_gradients_reach_exactly_the_trainable_parameters(model, torch.randn(1, 3, 64, 64))
    assert frozen == {"FPN.output_layer_4.weight", "FPN.output_layer_4.bias"}
    assert [tuple(output.shape) for output in outputs] == [(1, 9, 16, 16), (1, 16, 16, 16), (1, 1, 64, 64)]
    assert model.config()["backbone"] == "pvt_v2_b0"
    with pytest.raises(ValueError, match="unknown backbone"):
        NADSNet(image_size=64, backbone="resnet50")

