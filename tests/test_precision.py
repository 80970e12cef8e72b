"""--amp: which precision a run trains in, what is refused, and bf16 counterparts of the
float32 equality tests.

Both presets train in float32; `--amp auto` picks bf16 only on a CPU that computes bfloat16
natively (common.parallel.devices.cpu_bf16_supported), and on such a CPU the cpu preset says in its
first lines that bf16 is there to try. conftest makes every test run as on a CPU without it,
so these tests set the detection themselves. fp16 needs CUDA's loss scaling and is refused with
one line everywhere else.

Tolerances of the bf16 comparisons: bfloat16 keeps 8 significant bits, so each rounding of a
tensor to it moves a value by up to 2^-9 (0.2 %) relative. Autocast rounds every convolution's
and matrix product's inputs and output; two formulations that batch their tensors differently
(fake and real in one batch against two) round different intermediate sums, and the loss of
a tiny network goes through some 20 such layers, whose independent roundings add up to a few
tenths of a percent. Hence loss values within 2 % relative of each other and gradient
directions with a cosine above 0.99: loose enough for any CPU's summation order, tight
enough to catch a term computed on the wrong input or left out (tens of percent).
"""

from __future__ import annotations

import copy

import pytest
import torch

import common.parallel.devices
from common.parallel.devices import autocast_context
from common.errors import OptionError
from tests.test_gan_efficiency import reference_discriminator_step, reference_generator_step, tiny_batch, tiny_model

CPU = torch.device("cpu")
LOSS_RTOL = 2e-2
GRADIENT_COSINE = 0.99


def script_options(script: str):
    if script == "train_gan":
        from gan.options import parse_options
    else:
        from nadsnet_pvt.options import parse_options
    return parse_options


# --------------------------------------------------------------------------- the default


@pytest.mark.parametrize("script", ["train_gan", "train_nadsnet"])
@pytest.mark.parametrize("native", [True, False])
def test_the_presets_train_in_float32_and_auto_picks_bf16_only_where_the_cpu_computes_it(script, native, monkeypatch):
    monkeypatch.setattr(common.parallel.devices, "cpu_bf16_supported", lambda: native)
    parse_options = script_options(script)

    def precision_lines(messages):
        return [line for line in messages if line.startswith("precision: ")]

    options, messages = parse_options([], gpu_available=False)  # the quick start
    assert options.preset == "cpu" and options.amp == "off"
    assert len(precision_lines(messages)) == native and all("--amp bf16" in line for line in precision_lines(messages))
    options, messages = parse_options(["--amp", "auto"], gpu_available=False)
    assert options.amp == ("bf16" if native else "off")
    (said,) = precision_lines(messages)
    assert ("bf16 autocast" in said) == native and "--amp auto" in said
    options, messages = parse_options(["--amp", "off"], gpu_available=False)  # asked for: nothing to say
    assert options.amp == "off" and not precision_lines(messages)
    options, messages = parse_options(["--amp", "bf16"], gpu_available=False)  # asked for: said only when emulated
    assert options.amp == "bf16" and len(precision_lines(messages)) == (not native)
    assert all("emulated" in line for line in precision_lines(messages))
    options, _ = parse_options(["--preset", "seed"], gpu_available=False)  # the seed's float32
    assert options.amp == "off"
    options, _ = parse_options(["--preset", "cpu", "--amp", "auto"], gpu_available=True)  # on a GPU: float32
    assert options.amp == "off"
    options, _ = parse_options(["--preset", "seed", "--amp", "auto", "--gan-device", "cpu", "--nadsnet-device", "cpu"],
                               gpu_available=True)
    assert options.amp == ("bf16" if native else "off")


def test_the_detection_asks_torch_about_the_processor():
    # conftest replaces the function for every test; the original is still the module's code.
    from common.parallel.devices import amp_problem

    assert amp_problem("bf16", ["cpu"]) is None and amp_problem("off", ["cpu", "cuda"]) is None
    assert amp_problem("fp16", ["cuda"]) is None and "CUDA" in amp_problem("fp16", ["cuda", "cpu"])
    detected = _real_detection()
    assert isinstance(detected, bool)
    if not torch.backends.mkldnn.is_available():
        assert detected is False


def _real_detection() -> bool:
    import importlib

    fresh = importlib.reload(importlib.import_module("common.parallel.devices"))  # undo the fixture's patch
    try:
        return fresh.cpu_bf16_supported()
    finally:
        fresh.cpu_bf16_supported = lambda: False


# --------------------------------------------------------------------------- fp16 off CUDA


def test_fp16_is_refused_in_one_line_wherever_it_cannot_run(tmp_path, capsys):
    from gan.generation.commands import main as generate_main
    from gan.train import main as gan_main
    from nadsnet_pvt.evaluate import main as evaluate_main
    from nadsnet_pvt.train import main as nadsnet_main

    missing = str(tmp_path / "missing")
    calls = {
        "train_gan.py": lambda: gan_main(["--amp", "fp16", "--checkpoints-dir", str(tmp_path / "gan")]),
        "train_nadsnet.py": lambda: nadsnet_main(["--amp", "fp16", "--checkpoints-dir", str(tmp_path / "nads")]),
        "evaluate": lambda: evaluate_main(["--weights", missing, "--annotations", missing, "--images-dir", missing,
                                           "--masks-dir", missing, "--device", "cpu", "--amp", "fp16"]),
        "generate.py": lambda: generate_main(["dataset", "--generator", missing, "--annotations", missing, "--images-dir",
                                              missing, "--masks-dir", missing, "--out", str(tmp_path / "out"),
                                              "--device", "cpu", "--amp", "fp16"]),
    }
    for name, call in calls.items():
        assert call() == 2, name
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and "--amp fp16" in error and "CUDA" in error and "bf16" in error, (name, error)
    assert list(tmp_path.iterdir()) == []  # refused before anything was written


@pytest.mark.parametrize("script", ["train_gan", "train_nadsnet"])
def test_fp16_with_a_gpu_is_refused_when_a_network_is_put_on_the_cpu(script):
    parse_options = script_options(script)
    with pytest.raises(OptionError, match="--amp fp16"):
        parse_options(["--preset", "seed", "--amp", "fp16", "--nadsnet-device", "cpu"], gpu_available=True)
    with pytest.raises(OptionError, match="--amp fp16"):
        parse_options(["--preset", "seed", "--amp", "fp16"], gpu_available=False)


# --------------------------------------------------------------------------- bf16 counterparts


@pytest.fixture(scope="module")
def bf16_runs():
    """test_gan_efficiency's comparison in float32 weights under bf16 autocast: one G and one
    D step of the frugal trainer against the seed's straightforward formulation."""
    from gan.trainer import GANTrainer

    optimized = tiny_model().float()
    reference = copy.deepcopy(optimized)
    for parameter in reference.parameters():
        parameter.requires_grad_(True)
    optimized.train()
    reference.train()
    semantics, real = (tensor.float() for tensor in tiny_batch())
    trainer = GANTrainer(optimized, amp="bf16")
    reference_trainer = GANTrainer(reference)
    result = {"g": trainer.generator_step(semantics, real)}
    result["g_grads"] = {name: p.grad.clone() for name, p in optimized.netG.named_parameters()}
    with autocast_context(CPU, "bf16"):
        result["g_reference"] = reference_generator_step(reference, reference_trainer.optimizer_G, semantics, real)
    result["g_grads_reference"] = {name: p.grad.clone() for name, p in reference.netG.named_parameters()}
    result["d"] = trainer.discriminator_step(semantics, real)
    with autocast_context(CPU, "bf16"):
        result["d_reference"] = reference_discriminator_step(reference, reference_trainer.optimizer_D, semantics, real)
    result["models"] = optimized, reference
    return result


def test_bf16_loss_values_equal_the_straightforward_formulation(bf16_runs):
    for step in ("g", "d"):
        actual, expected = bf16_runs[step], bf16_runs[f"{step}_reference"]
        assert actual.keys() == expected.keys()
        for name, value in actual.items():
            assert value.dtype == torch.float32, name  # the losses are float32 under autocast
            torch.testing.assert_close(value, expected[name].detach().float(), rtol=LOSS_RTOL, atol=1e-4,
                                       msg=f"{step} step {name}")
    assert all(float(value) != 0.0 for value in bf16_runs["g"].values())


def test_bf16_generator_gradients_point_the_same_way(bf16_runs):
    actual = torch.cat([grad.flatten() for grad in bf16_runs["g_grads"].values()])
    expected = torch.cat([grad.flatten() for grad in bf16_runs["g_grads_reference"].values()])
    assert actual.dtype == torch.float32 and float(actual.norm()) > 0
    cosine = torch.nn.functional.cosine_similarity(actual, expected, dim=0)
    assert cosine > GRADIENT_COSINE, float(cosine)


def test_bf16_training_keeps_float32_weights_and_statistics(bf16_runs):
    optimized, _ = bf16_runs["models"]
    for name, value in optimized.state_dict().items():
        if value.is_floating_point():
            assert value.dtype == torch.float32, name


def test_bf16_nadsnet_step_and_evaluation_stay_close_to_float32(one_thread):
    from common.models.nadsnet import NADSNet
    from nadsnet_pvt.evaluate import predict
    from nadsnet_pvt.trainer import NADSNetTrainer

    torch.manual_seed(0)
    net = NADSNet(image_size=64, fpn_channels=16, head_channels=8)
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        outputs = {amp: predict(net.eval(), images, CPU, amp) for amp in ("off", "bf16")}
    for float32, bf16 in zip(outputs["off"], outputs["bf16"]):
        assert bf16.dtype == torch.float32
        scale = float(float32.abs().max())
        torch.testing.assert_close(bf16, float32, rtol=0, atol=LOSS_RTOL * scale)
    targets = (torch.rand(2, 9, 16, 16), torch.rand(2, 16, 16, 16) - 0.5, (torch.rand(2, 1, 64, 64) > 0.5).float())
    losses = {}
    for amp in ("off", "bf16"):
        trainer = NADSNetTrainer(copy.deepcopy(net), CPU, amp=amp, optimizer="adamw", lr=1e-3)
        losses[amp], _ = trainer.losses(images, targets[2], targets[0], targets[1])
    for name, value in losses["bf16"].items():
        assert value.dtype == torch.float32
        torch.testing.assert_close(value, losses["off"][name], rtol=LOSS_RTOL, atol=1e-4, msg=name)


def test_on_the_cpu_the_optimisers_run_fused_and_update_as_the_default_implementation():
    from common.parallel.devices import optimizer_implementation
    from gan.trainer import GANTrainer
    from nadsnet_pvt.trainer import NADSNetTrainer

    gan_trainer = GANTrainer(tiny_model().float())
    assert gan_trainer.optimizer_G.defaults["fused"] and gan_trainer.optimizer_D.defaults["fused"]
    assert optimizer_implementation(torch.device("cuda")) == {}
    torch.manual_seed(0)
    start = torch.randn(64)
    gradients = [torch.randn(64) for _ in range(5)]
    for optimizer in ("adamw", "sgd"):
        weights = {}
        for fused in (True, False):
            net = torch.nn.Linear(64, 1, bias=False)
            net.weight.data.copy_(start.view(1, -1))
            trainer = NADSNetTrainer(net, CPU, optimizer=optimizer, lr=1e-2)
            assert bool(trainer.optimizer.defaults.get("fused")) is True
            if not fused:  # the same settings, PyTorch's default implementation
                settings = {key: trainer.optimizer.defaults[key] for key in ("lr", "weight_decay")}
                if optimizer == "sgd":
                    settings["momentum"] = trainer.optimizer.defaults["momentum"]
                trainer.optimizer = type(trainer.optimizer)(net.parameters(), **settings)
            for gradient in gradients:
                net.weight.grad = gradient.view(1, -1).clone()
                trainer.optimizer.step()
            weights[fused] = net.weight.detach().clone()
        assert not torch.equal(weights[True], start.view(1, -1))
        torch.testing.assert_close(weights[True], weights[False], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("network", ["seatbelt head", "generator"])
def test_bf16_outputs_that_saturate_stay_float32_and_keep_their_gradient(network):
    # A pre-activation of 5: tanh(5) = 0.99991 in float32 but exactly 1 in bfloat16, where a
    # seatbelt probability of 1 (or a frame at the range's end) passes no gradient back.
    from common.models.generator import SPADEGenerator
    from common.models.losses import dice_bce_loss
    from common.models.nadsnet import NADSNet

    torch.manual_seed(0)
    if network == "seatbelt head":
        net = NADSNet(image_size=64, fpn_channels=16, head_channels=8)
        last, inputs = net.seatbelt_segmentation_branch.final_conv2, torch.randn(1, 3, 64, 64)
    else:
        net = SPADEGenerator(ngf=2, crop_size=64, spade_hidden=4)
        last, inputs = net.conv_img, torch.rand(1, 26, 64, 64)
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(5.0)
    with autocast_context(CPU, "bf16"):
        output = net(inputs)
        output = output.seatbelt if network == "seatbelt head" else output
        assert output.dtype == torch.float32
        assert (output < 1).all() and (output > 0.99).all()
        loss = dice_bce_loss(output, torch.zeros_like(output)) if network == "seatbelt head" else output.sum()
    loss.backward()
    assert float(last.bias.grad.abs().sum()) > 0
