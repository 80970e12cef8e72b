"""SPADE generator, multi-scale discriminator, SPADE normalisation and weight init.

All networks here have random weights on purpose (no checkpoint is needed to test shapes,
keys, the recompute path or the init statistics). Small widths (ngf/ndf 4-8) and 64-128 px
keep the tests fast; the two full-width tests (ngf/ndf 64) check the seed's checkpoint keys.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from common.models.discriminator import MultiscaleDiscriminator, NLayerDiscriminator
from common.models.generator import SPADEGenerator, SPADEResnetBlock
from common.models.init import init_weights
from common.models.normalization import SPADE, convert_sync_norms, frozen_norm_statistics

LISTING = Path(__file__).parent / "data" / "seed_state_dict_keys.txt"
GENERATOR_SECTION = "spade_generator_ngf64_semantic_nc26"
DISCRIMINATOR_SECTION = "multiscale_discriminator_ndf64_num_D2_n_layers4_input29"


def listing_section(section: str) -> list[tuple[str, tuple[int, ...]]]:
    """(key, shape) pairs of one section of the seed's state_dict listing, in file order."""
    entries: list[tuple[str, tuple[int, ...]]] = []
    current = None
    for line in LISTING.read_text().splitlines():
        if line.startswith("["):
            current = line.strip("[]")
        elif current == section and "\t" in line:
            key, shape = line.split("\t")
            dims = shape.strip("[]").replace(" ", "")
            entries.append((key, tuple(int(d) for d in dims.split(",")) if dims else ()))
    assert entries, f"section {section} missing from {LISTING}"
    return entries


def random_state_dict(entries: list[tuple[str, tuple[int, ...]]]) -> dict[str, torch.Tensor]:
    """A state dict with exactly the listed keys and shapes, random values (a stand-in for a
    seed checkpoint): positive running variances, integer batch counters."""
    generator = torch.Generator().manual_seed(0)
    state = {}
    for key, shape in entries:
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7, dtype=torch.long)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=generator) + 0.5
        else:
            state[key] = torch.randn(shape, generator=generator) * 0.02
    return state


def numel_of(shape: tuple[int, ...]) -> int:
    return math.prod(shape)  # () -> 1, a scalar buffer


# ---------------------------------------------------------------------------------------
# Seed checkpoint compatibility (full width)


def test_generator_state_dict_matches_seed_listing_and_loads_strict():
    entries = listing_section(GENERATOR_SECTION)
    # Weights do not depend on the crop size (fc is a 3x3 conv), so a 64 px generator has the
    # keys of the seed's 384 px one and a forward pass stays cheap.
    generator = SPADEGenerator(semantic_nc=26, ngf=64, crop_size=64)
    state = generator.state_dict()
    assert [(k, tuple(v.shape)) for k, v in state.items()] == entries
    total = sum(numel_of(shape) for _, shape in entries)
    assert sum(v.numel() for v in state.values()) == total
    assert round(total / 1e6, 1) == 92.9  # the seed's generator: 92.9 M values

    seed_state = random_state_dict(entries)
    generator.load_state_dict(seed_state, strict=True)
    generator.eval()
    with torch.no_grad():
        image = generator(torch.rand(1, 26, 64, 64))
    assert image.shape == (1, 3, 64, 64)
    assert torch.isfinite(image).all() and image.abs().max() <= 1.0
    assert torch.equal(generator.state_dict()["up_0.conv_s.weight_orig"], seed_state["up_0.conv_s.weight_orig"])


def test_discriminator_state_dict_matches_seed_listing_and_loads_strict():
    entries = listing_section(DISCRIMINATOR_SECTION)
    discriminator = MultiscaleDiscriminator(input_nc=29, ndf=64, n_layers=4, num_D=2)
    state = discriminator.state_dict()
    assert [(k, tuple(v.shape)) for k, v in state.items()] == entries
    assert sum(v.numel() for v in state.values()) == sum(numel_of(shape) for _, shape in entries)

    discriminator.load_state_dict(random_state_dict(entries), strict=True)
    with torch.no_grad():
        outputs = discriminator(torch.randn(1, 29, 64, 64))
    assert [len(scale) for scale in outputs] == [5, 5]
    assert [tuple(o.shape[1:]) for o in outputs[0]] == [(64, 33, 33), (128, 17, 17), (256, 9, 9), (512, 10, 10), (1, 11, 11)]


# ---------------------------------------------------------------------------------------
# Generator


def _run_recording_sizes(
    generator: SPADEGenerator, names: list[str], segmap: torch.Tensor
) -> tuple[torch.Tensor, dict[str, tuple[int, int]]]:
    """Run the generator; return its output and the spatial size of each named module's input."""
    sizes: dict[str, tuple[int, int]] = {}
    hooks = [
        getattr(generator, name).register_forward_pre_hook(
            lambda module, args, name=name: sizes.__setitem__(name, tuple(args[0].shape[-2:]))
        )
        for name in names
    ]
    try:
        image = generator(segmap)
    finally:
        for hook in hooks:
            hook.remove()
    return image, sizes


@pytest.mark.parametrize(
    "mode, start, middle_1, has_up_4",
    [("normal", 4, 8, False), ("more", 2, 8, False), ("most", 1, 4, True)],
)
def test_generator_upsampling_modes_at_128(mode, start, middle_1, has_up_4):
    torch.manual_seed(0)
    generator = SPADEGenerator(semantic_nc=26, ngf=4, crop_size=128, num_upsampling_layers=mode)
    assert generator.start_size == start
    assert hasattr(generator, "up_4") == has_up_4
    generator.train()
    image, sizes = _run_recording_sizes(
        generator, ["fc", "head_0", "G_middle_0", "G_middle_1", "up_0", "up_3"], torch.rand(2, 26, 128, 128)
    )
    assert sizes["fc"] == (start, start) and sizes["head_0"] == (start, start)
    assert sizes["G_middle_0"] == (2 * start, 2 * start)
    # 'more' and 'most' upsample once more, between G_middle_0 and G_middle_1.
    assert sizes["G_middle_1"] == (middle_1, middle_1)
    assert sizes["up_0"] == (2 * middle_1, 2 * middle_1)
    # up_3 works at the output size, except with 'most' whose up_4 block takes the last x2.
    assert sizes["up_3"] == ((64, 64) if has_up_4 else (128, 128))
    if has_up_4:
        assert generator.conv_img.in_channels == 2  # ngf // 2
    assert image.shape == (2, 3, 128, 128)
    assert image.abs().max() <= 1.0 and image.std() > 0


def test_generator_at_384_starts_from_a_12x12_grid():
    torch.manual_seed(0)
    generator = SPADEGenerator(semantic_nc=26, ngf=2, crop_size=384)
    assert generator.start_size == 12
    with torch.no_grad():
        image, sizes = _run_recording_sizes(generator, ["head_0", "up_3"], torch.rand(1, 26, 384, 384))
    assert sizes["head_0"] == (12, 12)
    assert sizes["up_3"] == (384, 384)
    assert image.shape == (1, 3, 384, 384)


@pytest.mark.parametrize(
    "crop_size, mode",
    [(100, "normal"), (96, "more"), (192, "most"), (0, "normal")],
)
def test_generator_rejects_crop_sizes_the_grid_cannot_reach(crop_size, mode):
    with pytest.raises(ValueError, match="multiple of"):
        SPADEGenerator(ngf=2, crop_size=crop_size, num_upsampling_layers=mode)


def test_generator_rejects_unknown_mode_and_wrong_channels():
    with pytest.raises(ValueError, match="num_upsampling_layers"):
        SPADEGenerator(ngf=2, crop_size=64, num_upsampling_layers="many")
    generator = SPADEGenerator(semantic_nc=26, ngf=2, crop_size=64)
    with pytest.raises(ValueError, match=r"\(B, 26, H, W\)"):
        generator(torch.rand(1, 25, 64, 64))


def test_resnet_block_shortcut_and_middle_channels():
    learned = SPADEResnetBlock(16, 8, semantic_nc=26)
    assert learned.learned_shortcut
    assert learned.conv_0.out_channels == 8 and learned.conv_1.in_channels == 8  # min(fin, fout)
    assert learned.conv_s.bias is None and learned.conv_s.kernel_size == (1, 1)
    identity = SPADEResnetBlock(8, 8, semantic_nc=26)
    assert not identity.learned_shortcut and not hasattr(identity, "conv_s")
    # Without a learned shortcut the block's output is x plus the main path (conv_1's output).
    main_path = {}
    identity.conv_1.register_forward_hook(lambda module, args, output: main_path.__setitem__("dx", output))
    x = torch.randn(2, 8, 16, 16)
    out = identity(x, torch.rand(2, 26, 64, 64))
    assert torch.allclose(out, x + main_path["dx"], atol=1e-6)
    assert main_path["dx"].abs().max() > 1e-3


def test_spade_layer_normalises_then_modulates_with_the_resized_segmap():
    torch.manual_seed(0)
    layer = SPADE(norm_nc=3, label_nc=2).train()
    x = torch.randn(4, 3, 8, 8) * 5 + 2
    segmap = torch.rand(4, 2, 32, 32)
    out = layer(x, segmap)
    small = F.interpolate(segmap, size=(8, 8), mode="nearest")
    embedding = F.relu(layer.mlp_shared[0](small))
    normalized = (x - x.mean(dim=(0, 2, 3), keepdim=True)) / torch.sqrt(
        x.var(dim=(0, 2, 3), unbiased=False, keepdim=True) + 1e-5
    )
    expected = normalized * (1 + layer.mlp_gamma(embedding)) + layer.mlp_beta(embedding)
    assert torch.allclose(out, expected, atol=1e-4)
    assert layer.param_free_norm.weight is None and layer.param_free_norm.bias is None


def test_checkpointed_blocks_give_identical_outputs_gradients_and_statistics():
    torch.manual_seed(0)
    plain = SPADEGenerator(semantic_nc=26, ngf=4, crop_size=32).train()
    checkpointed = copy.deepcopy(plain)
    checkpointed.checkpoint_blocks = True

    block_calls = {"count": 0}
    checkpointed.up_1.register_forward_pre_hook(lambda *_: block_calls.__setitem__("count", block_calls["count"] + 1))

    for _ in range(2):  # two steps: the second one starts from statistics the first updated
        segmap = torch.rand(2, 26, 32, 32)
        weights = torch.randn(2, 3, 32, 32)
        out_plain, out_checkpointed = plain(segmap), checkpointed(segmap)
        (out_plain * weights).sum().backward()
        (out_checkpointed * weights).sum().backward()
        assert torch.equal(out_plain, out_checkpointed)

    assert block_calls["count"] == 4  # forward + recompute in each step: checkpointing ran
    for (name, p_plain), (_, p_checkpointed) in zip(plain.named_parameters(), checkpointed.named_parameters()):
        assert torch.allclose(p_plain.grad, p_checkpointed.grad, rtol=1e-5, atol=1e-7), name
    # Running statistics, batch counters and spectral-norm vectors updated once per step.
    for (name, b_plain), (_, b_checkpointed) in zip(plain.named_buffers(), checkpointed.named_buffers()):
        assert torch.equal(b_plain, b_checkpointed), name
    assert plain.up_1.norm_0.param_free_norm.num_batches_tracked.item() == 2


def test_frozen_norm_statistics_uses_batch_statistics_without_updating_anything():
    torch.manual_seed(0)
    generator = SPADEGenerator(semantic_nc=26, ngf=4, crop_size=32).train()
    before = copy.deepcopy(generator.state_dict())
    segmap = torch.rand(2, 26, 32, 32)
    reference = copy.deepcopy(generator)
    with torch.no_grad(), frozen_norm_statistics(generator):
        frozen = generator(segmap)
    for key, value in generator.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert generator.up_0.conv_0.training  # modes restored
    # The same computation as training mode with batch statistics and no power iteration.
    for module in reference.modules():
        if hasattr(module, "weight_u"):
            module.eval()
    with torch.no_grad():
        expected = reference(segmap)
    assert torch.equal(frozen, expected)
    assert not torch.equal(reference.state_dict()["head_0.norm_0.param_free_norm.running_mean"],
                           before["head_0.norm_0.param_free_norm.running_mean"])


def test_sync_batchnorm_conversion_keeps_keys_and_outputs():
    torch.manual_seed(0)
    generator = SPADEGenerator(semantic_nc=26, ngf=4, crop_size=32).train()
    reference = copy.deepcopy(generator)
    keys = [(k, tuple(v.shape)) for k, v in generator.state_dict().items()]
    converted = convert_sync_norms(generator)
    assert isinstance(converted.head_0.norm_0.param_free_norm, nn.SyncBatchNorm)
    assert not any(type(m) is nn.BatchNorm2d for m in converted.modules())
    assert [(k, tuple(v.shape)) for k, v in converted.state_dict().items()] == keys
    converted.load_state_dict(reference.state_dict(), strict=True)
    segmap = torch.rand(2, 26, 32, 32)
    # Outside a process group SyncBatchNorm falls back to plain batch norm.
    assert torch.allclose(converted(segmap), reference(segmap), atol=1e-6)


# ---------------------------------------------------------------------------------------
# Discriminator


def test_multiscale_discriminator_returns_every_layer_of_every_scale():
    torch.manual_seed(0)
    # Eval mode: the spectral norms skip their power iteration, so calling a layer again
    # below reproduces its output.
    discriminator = MultiscaleDiscriminator(input_nc=29, ndf=8, n_layers=4, num_D=2).eval()
    outputs = discriminator(torch.randn(2, 29, 64, 64))
    assert len(outputs) == 2 and all(len(scale) == 5 for scale in outputs)
    channels = [8, 16, 32, 64, 1]
    # kernel 4, padding 2: stride 2 maps n -> n/2 + 1, stride 1 maps n -> n + 1.
    assert [tuple(o.shape) for o in outputs[0]] == [(2, c, s, s) for c, s in zip(channels, [33, 17, 9, 10, 11])]
    assert [tuple(o.shape) for o in outputs[1]] == [(2, c, s, s) for c, s in zip(channels, [17, 9, 5, 6, 7])]
    # Layers 1-3: conv + instance norm (per sample and channel: mean 0, variance 1) + lReLU.
    normalized = discriminator.discriminator_0.model1[0](outputs[0][0])
    assert normalized.mean(dim=(2, 3)).abs().max() < 1e-4
    assert torch.allclose(normalized.var(dim=(2, 3), unbiased=False), torch.ones(2, 16), atol=1e-2)
    assert torch.equal(outputs[0][1], F.leaky_relu(normalized, 0.2))


def test_discriminator_channels_cap_at_512_and_last_stride_is_one():
    single = NLayerDiscriminator(input_nc=3, ndf=256, n_layers=4)
    convs = [m for m in single.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [256, 512, 512, 512, 1]
    assert [c.stride[0] for c in convs] == [2, 2, 2, 1, 1]
    assert all(c.kernel_size == (4, 4) and c.padding == (2, 2) for c in convs)
    assert [c.bias is None for c in convs] == [False, True, True, True, False]
    assert all(isinstance(m[0][1], nn.InstanceNorm2d) and not m[0][1].affine for m in (single.model1, single.model2, single.model3))


def test_discriminator_downsampling_excludes_padding_from_the_average():
    x = torch.arange(16, dtype=torch.float32).view(1, 1, 4, 4)
    pooled = MultiscaleDiscriminator.downsample(x)
    assert pooled.shape == (1, 1, 2, 2)
    # Top-left window covers rows/cols {-1, 0, 1}: only x[0:2, 0:2] counts -> mean(0, 1, 4, 5).
    assert pooled[0, 0, 0, 0].item() == pytest.approx(2.5)
    # Window centred on (2, 2): rows/cols 1..3 -> mean of the 3x3 block.
    assert pooled[0, 0, 1, 1].item() == pytest.approx(x[0, 0, 1:4, 1:4].mean().item())


def test_discriminator_second_scale_sees_the_pooled_input():
    torch.manual_seed(0)
    discriminator = MultiscaleDiscriminator(input_nc=3, ndf=4, n_layers=2, num_D=2).eval()
    x = torch.randn(1, 3, 32, 32)
    outputs = discriminator(x)
    direct = discriminator.discriminator_1(MultiscaleDiscriminator.downsample(x))
    assert all(torch.equal(a, b) for a, b in zip(outputs[1], direct))


# ---------------------------------------------------------------------------------------
# Initialisation


def test_init_weights_xavier_statistics_and_zero_biases():
    torch.manual_seed(0)
    generator = init_weights(SPADEGenerator(semantic_nc=26, ngf=8, crop_size=64), "xavier", gain=0.02)
    weight = generator.head_0.conv_0.weight_orig  # (128, 128, 3, 3): fan_in = fan_out = 1152
    expected_std = 0.02 * math.sqrt(2.0 / (1152 + 1152))
    assert weight.mean().abs() < 0.05 * expected_std
    assert weight.std().item() == pytest.approx(expected_std, rel=0.03)
    shared = generator.head_0.norm_0.mlp_shared[0].weight  # (128, 26, 3, 3)
    assert shared.std().item() == pytest.approx(0.02 * math.sqrt(2.0 / (26 * 9 + 128 * 9)), rel=0.05)
    biases = [m.bias for m in generator.modules() if isinstance(m, nn.Conv2d) and m.bias is not None]
    assert biases and all(torch.count_nonzero(b) == 0 for b in biases)

    discriminator = init_weights(MultiscaleDiscriminator(input_nc=29, ndf=8, n_layers=4, num_D=1), "xavier")
    sn_weight = discriminator.discriminator_0.model3[0][0].weight_orig  # (64, 32, 4, 4)
    assert sn_weight.std().item() == pytest.approx(0.02 * math.sqrt(2.0 / (32 * 16 + 64 * 16)), rel=0.05)
    # The spectral norm divides the initialised weight_orig by its largest singular value.
    discriminator(torch.randn(1, 29, 32, 32))
    effective = discriminator.discriminator_0.model3[0][0].weight
    assert torch.linalg.matrix_norm(effective.reshape(64, -1), ord=2).item() < 1.5


def test_init_weights_batchnorm_with_affine_and_linear():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(400, 300), nn.BatchNorm2d(4000), nn.InstanceNorm2d(3))
    init_weights(net, "xavier", gain=0.02)
    assert net[0].weight.std().item() == pytest.approx(0.02 * math.sqrt(2.0 / 700), rel=0.03)
    assert torch.count_nonzero(net[0].bias) == 0
    assert net[1].weight.mean().item() == pytest.approx(1.0, abs=0.002)
    assert net[1].weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert torch.count_nonzero(net[1].bias) == 0
    with pytest.raises(ValueError, match="init_type"):
        init_weights(net, "uniformish")
