"""Checkpoint adaptation (common.models.adapt): seed NADS-Net state dicts, ImageNet PVT v1
weights and timm / official PVT-v2 weights.

Every checkpoint here is synthetic, with random values on purpose: it is built in the foreign
layout from a randomly initialised network, so the tests can check that each tensor lands
where it belongs. Nothing is downloaded.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from common.errors import CheckpointError
from common.models.adapt import (
    CheckpointMismatchError,
    adapt_imagenet_pvt,
    describe_mismatch,
    detect_layout,
    load_backbone_weights,
    load_into,
    read_state_dict,
    resize_position_embedding,
)
from common.models.nadsnet import NADSNet
from common.models.pvt import pvt_tiny

LISTING = Path(__file__).parent / "data" / "seed_state_dict_keys.txt"  # written by the seed's own code


def imagenet_pvt_tiny_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """A random PVT-tiny state dict in the official ImageNet layout: `pos_embedN`, sized for
    224 input (56^2, 28^2, 14^2, 7^2 positions), with a class position first at stage 4."""
    torch.manual_seed(seed)
    state = pvt_tiny(image_size=224).state_dict()
    imagenet = {}
    for key, value in state.items():
        match = re.fullmatch(r"pos_embed_(\d)", key)
        if match is None:
            imagenet[key] = value
        elif match.group(1) == "4":
            imagenet["pos_embed4"] = torch.cat((torch.full((1, 1, 512), 7.0), value), dim=1)  # (1, 50, 512)
        else:
            imagenet[f"pos_embed{match.group(1)}"] = value
    return imagenet


def test_detect_layout():
    assert detect_layout({"pos_embed1": torch.zeros(1), "block1.0.attn.q.weight": torch.zeros(1)}) == "imagenet_pvt"
    assert detect_layout({"PVT.pos_embed_1": torch.zeros(1)}) == "native"
    assert detect_layout({"stages.0.blocks.0.attn.q.weight": torch.zeros(1)}) == "timm_pvt_v2"
    assert detect_layout({"patch_embed1.proj.weight": torch.zeros(1),
                          "block1.0.mlp.dwconv.dwconv.weight": torch.zeros(1)}) == "official_pvt_v2"


def test_adapt_imagenet_pvt_renames_drops_class_position_and_resizes():
    imagenet = imagenet_pvt_tiny_state_dict()
    assert imagenet["pos_embed4"].shape == (1, 50, 512)
    adapted = adapt_imagenet_pvt(imagenet, image_size=384)
    assert not any(re.fullmatch(r"pos_embed\d", key) for key in adapted)
    assert [tuple(adapted[f"pos_embed_{i}"].shape) for i in range(1, 5)] == [
        (1, 96 * 96, 64), (1, 48 * 48, 128), (1, 24 * 24, 320), (1, 12 * 12, 512)]
    # Stage 4: the class position (index 0, all 7.0) is dropped before resizing 7x7 -> 12x12.
    grid = imagenet["pos_embed4"][:, 1:].reshape(1, 7, 7, 512).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(12, 12), mode="bilinear", align_corners=False)
    torch.testing.assert_close(adapted["pos_embed_4"], expected.permute(0, 2, 3, 1).reshape(1, 144, 512))
    assert torch.equal(adapted["block2.1.attn.kv.weight"], imagenet["block2.1.attn.kv.weight"])
    # At 224 nothing is resized: the 49 grid positions come through unchanged.
    assert torch.equal(adapt_imagenet_pvt(imagenet, image_size=224)["pos_embed_4"], imagenet["pos_embed4"][:, 1:])


@pytest.mark.parametrize("image_size", [128, 384])
def test_imagenet_pvt_loads_into_pvt_tiny(image_size):
    imagenet = imagenet_pvt_tiny_state_dict()
    backbone = pvt_tiny(image_size=image_size)
    report = load_into(backbone, imagenet, strict=True)
    assert report.layout == "imagenet_pvt" and report.complete
    assert sorted(report.resized) == [f"pos_embed_{i}" for i in range(1, 5)]
    assert len(report.loaded) == len(backbone.state_dict())
    assert "dropped the class-token position" in str(report) and f"loaded {len(report.loaded)}/" in str(report)
    assert torch.equal(backbone.block3[1].mlp.fc2.weight, imagenet["block3.1.mlp.fc2.weight"])
    assert torch.equal(backbone.head.weight, imagenet["head.weight"])  # the unused head is kept
    side = image_size // 32
    assert backbone.pos_embed_4.shape == (1, side * side, 512)
    with torch.no_grad():
        assert backbone(torch.randn(1, 3, image_size, image_size))[3].shape == (1, 512, side, side)


def test_imagenet_pvt_from_file_and_into_nadsnet_backbone_only(tmp_path):
    # The weights from a local file, wrapped as {'model': ...}, through backbone_weights=.
    imagenet = imagenet_pvt_tiny_state_dict(seed=0)
    path = tmp_path / "pvt_tiny_imagenet.pth"
    torch.save({"model": imagenet}, path)
    model = NADSNet(image_size=128, backbone_weights=path)
    assert torch.equal(model.PVT.block4[0].attn.q.weight, imagenet["block4.0.attn.q.weight"])
    assert model.backbone_load_report.layout == "imagenet_pvt"
    assert model.backbone_load_report.resized == [f"pos_embed_{i}" for i in range(1, 5)]

    # load_into on the whole network routes backbone weights to model.PVT and leaves the rest.
    fpn_before = model.FPN.lateral_layer_5.weight.clone()
    other = imagenet_pvt_tiny_state_dict(seed=1)
    report = load_into(model, other)
    assert report.target == "NADSNet.PVT" and report.complete
    assert torch.equal(model.PVT.patch_embed1.proj.weight, other["patch_embed1.proj.weight"])
    assert torch.equal(model.FPN.lateral_layer_5.weight, fpn_before)


@pytest.fixture(scope="module")
def nadsnet64_state() -> dict[str, torch.Tensor]:
    """State dict of a random NADSNet (9 heatmaps, seatbelt head) at 64 px (read only)."""
    torch.manual_seed(2)
    return NADSNet(image_size=64).state_dict()


def test_seed_checkpoint_with_data_parallel_prefix_loads_strict(nadsnet64_state):
    saved = {f"module.{key}": value for key, value in nadsnet64_state.items()}
    target = NADSNet(image_size=64)
    report = load_into(target, saved, strict=True)
    assert report.complete and report.target == "NADSNet" and not report.resized
    assert len(report.loaded) == len(saved)
    assert "module." in str(report)
    for key, value in target.state_dict().items():
        assert torch.equal(value, saved[f"module.{key}"]), key


def test_seed_384_checkpoint_into_smaller_model_resizes_position_embeddings():
    # Random tensors with exactly the keys and shapes the seed saved (384 px, 9 heatmaps).
    generator = torch.Generator().manual_seed(3)
    seed_state, inside = {}, False
    for line in LISTING.read_text().splitlines():
        if line.startswith("["):
            inside = line == "[nadsnet_pvt_tiny_9_heatmaps]"
        elif inside and line and not line.startswith("#"):
            key, shape = line.split("\t")
            seed_state[f"module.{key}"] = torch.randn(ast.literal_eval(shape), generator=generator)
    model = NADSNet(image_size=128)
    report = load_into(model, seed_state, strict=True)
    assert sorted(report.resized) == [f"PVT.pos_embed_{i}" for i in range(1, 5)]
    assert model.PVT.pos_embed_1.shape == (1, 32 * 32, 64)
    expected_4 = resize_position_embedding(seed_state["module.PVT.pos_embed_4"], 4)  # 12x12 -> 4x4
    torch.testing.assert_close(model.PVT.pos_embed_4, expected_4)
    assert torch.equal(model.PAF_branch.convs_on_P3[2].weight, seed_state["module.PAF_branch.convs_on_P3.2.weight"])


def test_heatmap_count_mismatch_strict_raises_and_loads_nothing(nadsnet64_state):
    ten = NADSNet(num_heatmaps=10, image_size=64)
    untouched = ten.FPN.output_layer_2.weight.clone()
    with pytest.raises(CheckpointMismatchError) as error:
        load_into(ten, nadsnet64_state, strict=True)
    message = str(error.value)
    assert "shape mismatch, 2 keys" in message
    assert ("keypoint_heatmap_branch.convs_on_feature_maps.4.weight (checkpoint [9, 256, 1, 1], "
            "model [10, 256, 1, 1])") in message
    assert torch.equal(ten.FPN.output_layer_2.weight, untouched)

    report = load_into(ten, nadsnet64_state, strict=False)
    assert len(report.mismatched) == 2 and not report.missing and not report.unexpected
    assert len(report.loaded) == len(nadsnet64_state) - 2
    assert torch.equal(ten.FPN.output_layer_2.weight, nadsnet64_state["FPN.output_layer_2.weight"])


def test_seatbelt_keys_are_unexpected_without_seatbelt_head(nadsnet64_state):
    without = NADSNet(seatbelt=False, image_size=64)
    expected = r"unexpected in the checkpoint, 22 keys: seatbelt_.*\(\+14 more\)"
    with pytest.raises(CheckpointMismatchError, match=expected):
        load_into(without, nadsnet64_state, strict=True)
    report = load_into(without, nadsnet64_state)
    assert len(report.unexpected) == 22
    assert all(key.startswith("seatbelt_segmentation_branch.") for key in report.unexpected)
    assert not report.missing and not report.mismatched


def test_describe_mismatch_lists_first_keys_and_counts():
    text = describe_mismatch([f"missing.{i}" for i in range(12)], ["extra.a"], limit=3)
    assert text.splitlines() == [
        "missing from the checkpoint, 12 keys: missing.0, missing.1, missing.2, ... (+9 more)",
        "unexpected in the checkpoint, 1 key: extra.a",
    ]
    assert describe_mismatch([], []) == ""


def _timm_classifier_state(name: str, seed: int) -> dict[str, torch.Tensor]:
    import timm

    torch.manual_seed(seed)
    return timm.create_model(name, pretrained=False).state_dict()


def _to_official_pvt_v2_layout(timm_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm PVT-v2 keys -> the original PVT-v2 release's keys (the inverse of timm's filter)."""
    official = {}
    for key, value in timm_state.items():
        key = re.sub(r"^patch_embed\.", "patch_embed1.", key)
        key = re.sub(r"^stages\.(\d)\.downsample\.", lambda m: f"patch_embed{int(m.group(1)) + 1}.", key)
        key = re.sub(r"^stages\.(\d)\.blocks\.(\d+)\.", lambda m: f"block{int(m.group(1)) + 1}.{m.group(2)}.", key)
        key = re.sub(r"^stages\.(\d)\.norm\.", lambda m: f"norm{int(m.group(1)) + 1}.", key)
        official[key.replace("mlp.dwconv.", "mlp.dwconv.dwconv.")] = value
    return official


def test_timm_pvt_v2_weights_from_local_file(tmp_path):
    timm_state = _timm_classifier_state("pvt_v2_b0", seed=5)
    path = tmp_path / "pvt_v2_b0.pth"
    torch.save(timm_state, path)
    model = NADSNet(image_size=64, backbone="pvt_v2_b0", backbone_weights=path)
    report = model.backbone_load_report
    assert report.layout == "timm_pvt_v2" and report.target == "FeatureListNet"
    assert report.unexpected == ["head.weight", "head.bias"] and not report.missing
    backbone_state = model.PVT.state_dict()
    assert len(report.loaded) == len(backbone_state)
    for key, value in timm_state.items():
        if not key.startswith("head."):
            assert torch.equal(backbone_state[re.sub(r"^stages\.(\d)\.", r"stages_\1.", key)], value), key
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64))[0].shape == (1, 9, 16, 16)
    with pytest.raises(ValueError, match="pvt_tiny"):  # PVT v1 weights cannot fit a PVT-v2 backbone
        load_into(model, imagenet_pvt_tiny_state_dict())
    with pytest.raises(ValueError, match="pvt_v2_b"):  # nor PVT-v2 weights a PVT v1 backbone
        load_into(NADSNet(image_size=64), timm_state)


def test_official_pvt_v2_layout_and_safetensors_file(tmp_path):
    from safetensors.torch import save_file

    timm_state = _timm_classifier_state("pvt_v2_b0", seed=6)
    path = tmp_path / "pvt_v2_b0_official.safetensors"
    save_file({k: v.contiguous() for k, v in _to_official_pvt_v2_layout(timm_state).items()}, str(path))
    assert detect_layout(read_state_dict(path)) == "official_pvt_v2"
    model = NADSNet(image_size=64, backbone="pvt_v2_b0", backbone_weights=path)
    assert model.backbone_load_report.layout == "official_pvt_v2"
    dwconv = timm_state["stages.2.blocks.1.mlp.dwconv.weight"]
    assert torch.equal(model.PVT.stages_2.blocks[1].mlp.dwconv.weight, dwconv)
    assert torch.equal(model.PVT.stages_1.downsample.proj.weight, timm_state["stages.1.downsample.proj.weight"])


def test_backbone_weights_of_another_variant_raise_naming_the_file(tmp_path):
    import timm

    path = tmp_path / "pvt_v2_b1.pth"
    torch.save(_timm_classifier_state("pvt_v2_b1", seed=7), path)
    backbone = timm.create_model("pvt_v2_b0", pretrained=False, features_only=True)
    before = backbone.state_dict()["patch_embed.proj.weight"].clone()
    expected = r"pvt_v2_b1\.pth \(timm PVT-v2 layout\) does not match FeatureListNet: .*; shape mismatch, 176 keys"
    with pytest.raises(CheckpointMismatchError, match=expected):
        load_backbone_weights(backbone, path)
    assert torch.equal(backbone.state_dict()["patch_embed.proj.weight"], before)  # nothing loaded


def test_read_state_dict_errors(tmp_path):
    with pytest.raises(CheckpointError, match="nowhere.safetensors"):
        read_state_dict(tmp_path / "nowhere.safetensors")
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="broken.safetensors"):
        read_state_dict(broken)
    not_weights = tmp_path / "list.pth"
    torch.save([1, 2, 3], not_weights)
    with pytest.raises(CheckpointError, match="list.pth"):
        read_state_dict(not_weights)
