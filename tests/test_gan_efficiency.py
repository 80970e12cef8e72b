"""The GAN's frugal G and D steps learn exactly what the seed's straightforward steps learn.

The optimized implementation (gan.model.GANModel + gan.trainer.GANTrainer) freezes NADS-Net,
VGG and, in the G step, the discriminator; runs the real-image branches without autograd; and
generates the D step's fake without autograd. The reference below is written the seed's way:
every network's parameters require grad, the real branches are tracked, D sees fake and real
in one batch in both steps, and the D step's fake is generated with autograd, detached and
made to require grad (SPADE's `fake_image.requires_grad_()`). One G step and one D step from
the same weights must give the same loss values, the same gradients, and the same weights,
batch-norm statistics and spectral-norm vectors afterwards.

Tiny configuration: 64 px, ngf 4, ndf 8, batch 1; all networks have random weights (NADS-Net
and VGG19 included, on purpose: nothing is downloaded). In float64: many generator biases feed a
batch norm, so their true gradient is 0 and what autograd computes is rounding noise, which
Adam's first step turns into +-lr; in float64 that noise is far below Adam's eps, so the
comparison of the updates is exact to the tolerance instead of a coin toss. (The seed's
float32 arithmetic is reproduced to float32 rounding; only the order of a few sums differs.)
"""

from __future__ import annotations

import copy
import os
import platform
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from common.posedata.imaging import gan_to_imagenet
from common.posedata.maps import gan_input
from common.models.discriminator import MultiscaleDiscriminator
from common.models.generator import SPADEGenerator
from common.models.init import init_weights
from common.models.losses import VGG_LAYER_WEIGHTS, VGGLoss, dice_bce_loss
from common.models.nadsnet import NADSNet
from gan.model import GANModel, LossWeights
from gan.trainer import GANTrainer

SIZE = 64
TOLERANCE = 1e-5


def tiny_model() -> GANModel:
    torch.manual_seed(0)
    generator = SPADEGenerator(ngf=4, crop_size=SIZE)
    discriminator = MultiscaleDiscriminator(ndf=8)
    init_weights(generator, gain=0.02)
    init_weights(discriminator, gain=0.02)
    model = GANModel(
        generator,
        discriminator,
        weights=LossWeights(),
        vgg_loss=VGGLoss(weights="random"),
        nadsnet=NADSNet(image_size=SIZE),
    )
    return model.double()


def tiny_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Semantics (1, 26, 64, 64) from two poses + a seatbelt band, a real image in [-1, 1].

    Batch 1 (the seed's) keeps the test fast: VGG19 dominates its cost even at 64 px."""
    generator = torch.Generator().manual_seed(1)
    keypoints = SIZE * (0.2 + 0.6 * torch.rand(1, 2, 9, 2, generator=generator))
    keypoints[0, 1, 0] = float("nan")  # a missing keypoint
    seatbelt = torch.zeros(1, 1, SIZE, SIZE)
    seatbelt[:, :, 20:28, :] = 1.0
    real = torch.rand(1, 3, SIZE, SIZE, generator=generator) * 2 - 1
    return gan_input(keypoints, seatbelt, SIZE).double(), real.double()


def split_halves(predictions, batch: int):
    fake = [[layer[:batch] for layer in scale] for scale in predictions]
    real = [[layer[batch:] for layer in scale] for scale in predictions]
    return fake, real


def reference_generator_step(model: GANModel, optimizer: torch.optim.Optimizer, semantics, real) -> dict[str, torch.Tensor]:
    """The seed's G step: nothing frozen, D on fake and real in one batch, real branches tracked."""
    optimizer.zero_grad(set_to_none=True)
    fake = model.netG(semantics)
    both = torch.cat([torch.cat([semantics, fake], 1), torch.cat([semantics, real], 1)], 0)
    pred_fake, pred_real = split_halves(model.netD(both), fake.shape[0])
    num_d = len(pred_fake)
    losses = {"GAN": sum(-scale[-1].mean() for scale in pred_fake) / num_d}
    losses["GAN_Feat"] = sum(
        F.l1_loss(f, r.detach()) for fs, rs in zip(pred_fake, pred_real) for f, r in zip(fs[:-1], rs[:-1])
    ) * (10.0 / num_d)
    vgg = model.vgg_loss.vgg
    fake_features, real_features = vgg(gan_to_imagenet(fake)), vgg(gan_to_imagenet(real))
    losses["VGG"] = 10.0 * sum(w * F.l1_loss(f, r.detach()) for w, f, r in zip(VGG_LAYER_WEIGHTS, fake_features, real_features))
    on_fake, on_real = model.nadsnet(gan_to_imagenet(fake)), model.nadsnet(gan_to_imagenet(real))
    losses["heatmap"] = F.mse_loss(on_fake[0], on_real[0]) * 100.0
    losses["paf"] = F.mse_loss(on_fake[1], on_real[1]) * 100.0
    losses["seatbelt"] = dice_bce_loss(on_fake[2], on_real[2]) * 1.0
    sum(losses.values()).backward()
    optimizer.step()
    return losses


def reference_discriminator_step(model: GANModel, optimizer: torch.optim.Optimizer, semantics, real) -> dict[str, torch.Tensor]:
    """The seed's D step: the fake generated with autograd, detached, then requiring grad."""
    optimizer.zero_grad(set_to_none=True)
    fake = model.netG(semantics).detach().requires_grad_()
    both = torch.cat([torch.cat([semantics, fake], 1), torch.cat([semantics, real], 1)], 0)
    pred_fake, pred_real = split_halves(model.netD(both), fake.shape[0])
    num_d = len(pred_fake)
    losses = {
        "D_Fake": sum(F.relu(1 + scale[-1]).mean() for scale in pred_fake) / num_d,
        "D_real": sum(F.relu(1 - scale[-1]).mean() for scale in pred_real) / num_d,
    }
    sum(losses.values()).backward()
    optimizer.step()
    return losses


def assert_close_dicts(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], what: str) -> None:
    assert actual.keys() == expected.keys(), what
    for name in expected:
        torch.testing.assert_close(actual[name].float(), expected[name].detach().float(), atol=TOLERANCE, rtol=0, msg=f"{what} {name}")


def grads(net: torch.nn.Module) -> dict[str, torch.Tensor | None]:
    return {name: p.grad for name, p in net.named_parameters()}


@pytest.fixture(scope="module")
def both_runs():
    """(optimized model, reference model, optimized losses, reference losses, G grads of both)."""
    optimized = tiny_model()
    reference = copy.deepcopy(optimized)
    for parameter in reference.parameters():  # the seed's way: every parameter tracked
        parameter.requires_grad_(True)
    optimized.train()
    reference.train()
    semantics, real = tiny_batch()
    trainer = GANTrainer(optimized)
    reference_trainer = GANTrainer(reference)  # only for its two Adam optimisers (same settings)

    result = {"optimized": optimized, "reference": reference}
    result["g_losses"] = trainer.generator_step(semantics, real)
    result["g_losses_reference"] = reference_generator_step(reference, reference_trainer.optimizer_G, semantics, real)
    result["g_grads"] = {n: g.clone() for n, g in grads(optimized.netG).items()}
    result["g_grads_reference"] = {n: g.clone() for n, g in grads(reference.netG).items()}
    result["frozen_grads_after_g_step"] = {
        "discriminator": grads(optimized.netD),
        "vgg": grads(optimized.vgg_loss),
        "nadsnet": grads(optimized.nadsnet),
    }
    trainer.optimizer_G.zero_grad(set_to_none=True)  # so that any gradient the D step leaves in G shows
    result["d_losses"] = trainer.discriminator_step(semantics, real)
    result["d_losses_reference"] = reference_discriminator_step(reference, reference_trainer.optimizer_D, semantics, real)
    result["g_grads_after_d_step"] = grads(optimized.netG)
    return result


def test_loss_values_equal_the_straightforward_formulation(both_runs):
    assert_close_dicts(both_runs["g_losses"], both_runs["g_losses_reference"], "G step")
    assert_close_dicts(both_runs["d_losses"], both_runs["d_losses_reference"], "D step")
    # The guidance and VGG terms are really on and non-trivial in this configuration.
    assert all(float(v) != 0.0 for v in both_runs["g_losses"].values())


def test_generator_gradients_and_updates_equal(both_runs):
    expected = both_runs["g_grads_reference"]
    for name, grad in both_runs["g_grads"].items():
        torch.testing.assert_close(grad, expected[name], atol=1e-10, rtol=1e-6, msg=f"G grad {name}")
    reference_state = both_runs["reference"].netG.state_dict()
    for name, value in both_runs["optimized"].netG.state_dict().items():  # weights, BN statistics, SN vectors
        torch.testing.assert_close(value, reference_state[name], atol=TOLERANCE, rtol=0, msg=f"G {name}")


def test_discriminator_updates_equal(both_runs):
    reference = both_runs["reference"].netD
    for (name, parameter), (_, expected) in zip(both_runs["optimized"].netD.named_parameters(), reference.named_parameters()):
        torch.testing.assert_close(parameter.grad, expected.grad, atol=1e-10, rtol=1e-6, msg=f"D grad {name}")
    reference_state = reference.state_dict()
    for name, value in both_runs["optimized"].netD.state_dict().items():  # weights and spectral-norm vectors
        torch.testing.assert_close(value, reference_state[name], atol=TOLERANCE, rtol=0, msg=f"D {name}")


def test_frozen_networks_get_no_gradients(both_runs):
    for network, network_grads in both_runs["frozen_grads_after_g_step"].items():
        assert network_grads, network
        assert all(g is None for g in network_grads.values()), f"{network} got gradients in the G step"
    assert all(g is None for g in both_runs["g_grads_after_d_step"].values()), "the D step computed generator gradients"
    # ... while the reference's straightforward G step did compute them (what the optimization saves).
    assert any(p.grad is not None for p in both_runs["reference"].nadsnet.parameters())
    assert all(g is not None for g in both_runs["g_grads"].values())


def test_on_the_cpu_the_networks_train_channels_last_and_files_keep_the_default_layout(tmp_path):
    """oneDNN convolves NHWC without reordering (docs/performance.md: the 384 px iteration is
    faster); a network's file must still hold default-layout tensors, as the seed's do."""
    from common.training.checkpoints import save_network

    model = tiny_model()
    convolution_weights = {
        name: value for net in (model.netG, model.netD, model.nadsnet)
        for name, value in net.state_dict().items() if value.dim() == 4
    }
    assert convolution_weights
    for name, weight in convolution_weights.items():
        assert weight.is_contiguous(memory_format=torch.channels_last), name
    semantics, real = tiny_batch()
    fake = model.generate(semantics)
    assert fake.is_contiguous(memory_format=torch.channels_last)  # default-layout inputs convolved NHWC

    save_network(model.netG, tmp_path / "G.pth", {})
    saved = torch.load(tmp_path / "G.pth", weights_only=True)
    assert all(value.is_contiguous() for value in saved.values())
    assert all(torch.equal(saved[name], value) for name, value in model.netG.state_dict().items())


@pytest.mark.skipif(not Path("/proc/self/statm").exists() or platform.libc_ver()[0] != "glibc",
                    reason="glibc on Linux only")
def test_free_heap_pages_are_handed_back_only_above_the_threshold():
    """The holes freed tensors leave inside glibc's heaps stay resident until handed back; small
    amounts are left alone (handing them back costs page faults at the next step)."""
    from common.parallel.devices import free_heap_bytes, release_free_heap_pages

    def resident_bytes() -> int:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    if free_heap_bytes() is None:
        pytest.skip("glibc older than 2.33 (no mallinfo2)")
    cpu = torch.device("cpu")
    torch.ones(1 << 20)  # a freed 4 MiB block raises glibc's mmap threshold: the next come from the heap
    blocks = [torch.ones(1 << 20) for _ in range(100)]
    kept = blocks[1::2]  # every other block freed: 200 MiB of holes the heap cannot trim from its top
    del blocks
    assert free_heap_bytes() > 150 << 20
    before = resident_bytes()
    assert not release_free_heap_pages(cpu, above_bytes=1 << 40)
    assert resident_bytes() > before - (50 << 20)
    assert release_free_heap_pages(cpu, above_bytes=100 << 20)
    assert resident_bytes() < before - (150 << 20)
    assert not release_free_heap_pages(torch.device("meta"), above_bytes=0)  # CPU runs only
    assert len(kept) == 50


def test_the_memory_hook_runs_after_each_loss_branch_and_each_update():
    """The model computes; memory tuning is the caller's hook: called once per active loss branch
    of the generator step (adversarial, perceptual, guidance) and after each optimiser step."""
    model = tiny_model()
    calls = []
    model.release_memory = lambda: calls.append(1)
    trainer = GANTrainer(model)
    semantics, real = tiny_batch()
    trainer.generator_step(semantics, real)
    assert len(calls) == 3 + 1
    calls.clear()
    trainer.discriminator_step(semantics, real)
    assert len(calls) == 1
