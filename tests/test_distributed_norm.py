"""Synchronised batch norm, batch-norm conversion and distributed Dice-BCE on CPU (gloo).

The distributed checks run once, in two processes started with torch.multiprocessing
(`distributed_results`): each process works on its slice of a fixed global batch and saves
what it computed; the tests compare that with one process computing on the whole batch.
Slices are 2 + 2 and 3 + 1 samples (unequal local batches).
"""

from __future__ import annotations

import copy
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from common.parallel.distributed_ops import DistributedBatchNorm2d, distributed_world_size, global_sums
from common.models.factory import build_generator, generator_config
from common.models.losses import dice_bce_loss, dice_loss, nadsnet_loss
from common.models.normalization import (
    convert_batch_norms_for_distributed,
    convert_sync_norms,
    frozen_norm_statistics,
)

WORLD_SIZE = 2
GLOBAL_BATCH = 4
SPLITS = {"equal": (2, 2), "unequal": (3, 1)}
# name -> (affine, momentum, split); momentum None is the cumulative average.
BN_CASES = {
    "affine": (True, 0.1, "equal"),
    "affine_cumulative_unequal": (True, None, "unequal"),
    "param_free_unequal": (False, 0.1, "unequal"),
}
BN_STEPS = 2


def _rows(split: str, rank: int) -> slice:
    """The samples of the global batch that process `rank` holds."""
    sizes = SPLITS[split]
    start = sum(sizes[:rank])
    return slice(start, start + sizes[rank])


# ---------------------------------------------------------------------------------------
# Inputs shared by the processes and the single-process references (fixed seeds)


def _bn_inputs(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Global input (4, 3, 5, 5) with per-channel offsets and scales, and an upstream
    gradient of the same shape, float64."""
    generator = torch.Generator().manual_seed(100 + step)
    offsets = torch.tensor([3.0, -1.0, 0.5], dtype=torch.float64).view(1, 3, 1, 1)
    scales = torch.tensor([2.0, 0.5, 1.0], dtype=torch.float64).view(1, 3, 1, 1)
    x = torch.randn(GLOBAL_BATCH, 3, 5, 5, generator=generator, dtype=torch.float64) * scales + offsets
    upstream = torch.randn(GLOBAL_BATCH, 3, 5, 5, generator=generator, dtype=torch.float64)
    return x, upstream


def _new_bn(cls: type, affine: bool, momentum: float | None) -> nn.BatchNorm2d:
    torch.manual_seed(7)
    bn = cls(3, momentum=momentum, affine=affine).double()
    if affine:
        with torch.no_grad():
            bn.weight.copy_(torch.rand(3) + 0.5)
            bn.bias.copy_(torch.randn(3))
    return bn


def _small_generator() -> nn.Module:
    torch.manual_seed(3)
    return build_generator(generator_config(ngf=2, image_size=32)).double().train()


def _generator_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(5)
    segmap = torch.rand(GLOBAL_BATCH, 26, 32, 32, generator=generator, dtype=torch.float64)
    upstream = torch.randn(GLOBAL_BATCH, 3, 32, 32, generator=generator, dtype=torch.float64)
    return segmap, upstream


def _loss_net() -> nn.Module:
    """A conv whose 5 output channels are 2 heatmaps, 2 PAFs and a seatbelt logit."""
    torch.manual_seed(11)
    return nn.Conv2d(3, 5, kernel_size=3, padding=1)


def _loss_batch() -> tuple[torch.Tensor, ...]:
    """Global images (4, 3, 6, 6), heatmap and PAF targets (4, 2, 6, 6), seatbelt mask (4, 1, 6, 6)."""
    generator = torch.Generator().manual_seed(13)
    images = torch.randn(GLOBAL_BATCH, 3, 6, 6, generator=generator)
    heatmaps = torch.rand(GLOBAL_BATCH, 2, 6, 6, generator=generator)
    pafs = torch.randn(GLOBAL_BATCH, 2, 6, 6, generator=generator)
    # Unequal belt areas per sample, so a per-process Dice differs from the global one.
    belt = (torch.rand(GLOBAL_BATCH, 1, 6, 6, generator=generator) < torch.tensor([0.1, 0.3, 0.5, 0.8]).view(-1, 1, 1, 1))
    return images, heatmaps, pafs, belt.float()


def _loss_terms(net: nn.Module, rows: slice, loss: str, reducer) -> dict[str, torch.Tensor]:
    """The loss `loss` ('nadsnet', 'dice_bce' or 'dice') of `net` on the samples `rows`."""
    images, heatmaps, pafs, belt = (t[rows] for t in _loss_batch())
    out = net(images)
    pred_heatmaps, pred_pafs, pred_belt = out[:, :2], out[:, 2:4], torch.sigmoid(out[:, 4:5])
    if loss == "nadsnet":
        return nadsnet_loss(pred_heatmaps, pred_pafs, pred_belt, heatmaps, pafs, belt, reducer=reducer)
    if loss == "dice_bce":
        return {"total": dice_bce_loss(pred_belt, belt, reducer=reducer)}
    return {"total": dice_loss(pred_belt, belt, reducer=reducer)}


LOSS_CASES = [
    ("nadsnet", "equal", True), ("nadsnet", "unequal", True), ("dice_bce", "unequal", True),
    ("dice", "equal", True), ("dice", "equal", False),
]


# ---------------------------------------------------------------------------------------
# The two processes


def _run_bn_case(rank: int, affine: bool, momentum: float | None, split: str) -> dict:
    bn = _new_bn(DistributedBatchNorm2d, affine, momentum).train()
    rows = _rows(split, rank)
    result: dict = {"outputs": [], "input_grads": []}
    for step in range(BN_STEPS):
        x_global, upstream = _bn_inputs(step)
        x = x_global[rows].clone().requires_grad_()
        y = bn(x)
        (y * upstream[rows]).sum().backward()
        result["outputs"].append(y.detach())
        result["input_grads"].append(x.grad)
    result["state"] = copy.deepcopy(bn.state_dict())
    result["param_grads"] = {name: p.grad.clone() for name, p in bn.named_parameters()}
    x_frozen, _ = _bn_inputs(BN_STEPS)
    with torch.no_grad(), frozen_norm_statistics(bn):
        result["frozen_output"] = bn(x_frozen[rows])
    result["state_after_frozen"] = copy.deepcopy(bn.state_dict())
    return result


def _run_single_process_groups(rank: int) -> dict:
    """A process group of one process: the layer must be nn.BatchNorm2d exactly."""
    groups = [dist.new_group([r]) for r in range(WORLD_SIZE)]  # every rank creates every group
    synced = _new_bn(DistributedBatchNorm2d, True, 0.1)
    synced.process_group = groups[rank]
    plain = _new_bn(nn.BatchNorm2d, True, 0.1)
    x_global, upstream = _bn_inputs(0)
    result = {}
    for name, bn in (("synced", synced), ("plain", plain)):
        x = x_global[_rows("unequal", rank)].clone().requires_grad_()
        y = bn(x)
        (y * upstream[_rows("unequal", rank)]).sum().backward()
        result[name] = (y.detach(), x.grad, bn.weight.grad, bn.state_dict())
    return result


def _run_generator(rank: int, checkpoint_blocks: bool) -> dict:
    """Converted generator in DDP on the 3 + 1 split, loss sum(output * upstream)."""
    generator = convert_batch_norms_for_distributed(_small_generator(), "gloo")
    generator.checkpoint_blocks = checkpoint_blocks
    model = DistributedDataParallel(generator)
    segmap, upstream = _generator_inputs()
    rows = _rows("unequal", rank)
    out = model(segmap[rows])
    (out * upstream[rows]).sum().backward()
    return {
        "output": out.detach(),
        "grads": {name: p.grad.clone() for name, p in generator.named_parameters()},
        "state": copy.deepcopy(generator.state_dict()),
    }


def _run_loss_case(rank: int, loss: str, split: str, use_reducer: bool) -> dict:
    """A loss in DDP (which averages the gradients over the processes)."""
    model = DistributedDataParallel(_loss_net())
    terms = _loss_terms(model, _rows(split, rank), loss, global_sums if use_reducer else None)
    terms["total"].backward()
    return {
        "values": {key: value.detach() for key, value in terms.items()},
        "grads": [p.grad.clone() for p in model.module.parameters()],
    }


def _worker(rank: int, init_file: str, results_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE, timeout=timedelta(seconds=60)
    )
    try:
        results = {
            "bn": {name: _run_bn_case(rank, *case) for name, case in BN_CASES.items()},
            "single_process_group": _run_single_process_groups(rank),
            "generator": {flag: _run_generator(rank, flag) for flag in (False, True)},
            "losses": {case: _run_loss_case(rank, *case) for case in LOSS_CASES},
            "world_size": distributed_world_size(),
        }
        torch.save(results, Path(results_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def distributed_results(tmp_path_factory) -> list[dict]:
    """What each of the two gloo processes computed, indexed by rank."""
    directory = tmp_path_factory.mktemp("distributed")
    mp.start_processes(
        _worker, args=(str(directory / "init"), str(directory)), nprocs=WORLD_SIZE, start_method="spawn"
    )
    return [torch.load(directory / f"rank{rank}.pt", weights_only=False) for rank in range(WORLD_SIZE)]


# ---------------------------------------------------------------------------------------
# Distributed: two processes equal one process on the global batch


def _single_process_bn(affine: bool, momentum: float | None) -> dict:
    bn = _new_bn(nn.BatchNorm2d, affine, momentum).train()
    result: dict = {"outputs": [], "input_grads": []}
    for step in range(BN_STEPS):
        x_global, upstream = _bn_inputs(step)
        x = x_global.clone().requires_grad_()
        y = bn(x)
        (y * upstream).sum().backward()
        result["outputs"].append(y.detach())
        result["input_grads"].append(x.grad)
    result["state"] = copy.deepcopy(bn.state_dict())
    result["param_grads"] = {name: p.grad.clone() for name, p in bn.named_parameters()}
    with torch.no_grad():
        result["frozen_output"] = F.batch_norm(
            _bn_inputs(BN_STEPS)[0], None, None, bn.weight, bn.bias, training=True, eps=bn.eps
        )
    return result


def _assert_close(actual: torch.Tensor, expected: torch.Tensor, tolerance: float = 1e-10) -> None:
    torch.testing.assert_close(actual, expected, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("case", sorted(BN_CASES))
def test_two_process_batch_norm_equals_batch_norm_on_the_global_batch(distributed_results, case):
    affine, momentum, split = BN_CASES[case]
    reference = _single_process_bn(affine, momentum)
    assert distributed_results[0]["world_size"] == WORLD_SIZE
    for rank, results in enumerate(distributed_results):
        result, rows = results["bn"][case], _rows(split, rank)
        for step in range(BN_STEPS):
            _assert_close(result["outputs"][step], reference["outputs"][step][rows])
            _assert_close(result["input_grads"][step], reference["input_grads"][step][rows])
        assert result["state"].keys() == reference["state"].keys()
        for key, value in reference["state"].items():
            _assert_close(result["state"][key], value)
        assert result["state"]["num_batches_tracked"].item() == BN_STEPS
    # The weight and bias gradients: each process holds its own samples' part.
    assert set(reference["param_grads"]) == ({"weight", "bias"} if affine else set())
    for name, expected in reference["param_grads"].items():
        _assert_close(sum(r["bn"][case]["param_grads"][name] for r in distributed_results), expected)


@pytest.mark.parametrize("case", sorted(BN_CASES))
def test_two_process_batch_norm_under_no_grad_in_frozen_statistics(distributed_results, case):
    """Batch statistics of the global batch, running statistics untouched (as NADS-Net training runs the generator)."""
    split = BN_CASES[case][2]
    reference = _single_process_bn(*BN_CASES[case][:2])
    for rank, results in enumerate(distributed_results):
        result = results["bn"][case]
        _assert_close(result["frozen_output"], reference["frozen_output"][_rows(split, rank)])
        for key, value in result["state"].items():
            assert torch.equal(result["state_after_frozen"][key], value), key


def test_process_group_of_one_process_is_plain_batch_norm_bit_for_bit(distributed_results):
    for results in distributed_results:
        synced, plain = results["single_process_group"]["synced"], results["single_process_group"]["plain"]
        for actual, expected in zip(synced[:3], plain[:3]):
            assert torch.equal(actual, expected)
        assert all(torch.equal(synced[3][key], plain[3][key]) for key in plain[3])


@pytest.mark.parametrize("checkpoint_blocks", [False, True])
def test_converted_generator_in_ddp_equals_generator_on_the_global_batch(distributed_results, checkpoint_blocks):
    reference = _small_generator()
    segmap, upstream = _generator_inputs()
    output = reference(segmap)
    (output * upstream).sum().backward()
    for rank, results in enumerate(distributed_results):
        result = results["generator"][checkpoint_blocks]
        _assert_close(result["output"], output.detach()[_rows("unequal", rank)], 1e-9)
        for key, value in reference.state_dict().items():  # running stats, spectral vectors
            _assert_close(result["state"][key], value, 1e-9)
        # DDP averaged the processes' gradients of sum_j L_j: P times that is the global one.
        for name, parameter in reference.named_parameters():
            _assert_close(result["grads"][name] * WORLD_SIZE, parameter.grad, 1e-9)


def _single_process_loss(loss: str) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
    net = _loss_net()
    terms = _loss_terms(net, slice(None), loss, None)
    terms["total"].backward()
    return {key: value.detach() for key, value in terms.items()}, [p.grad for p in net.parameters()]


@pytest.mark.parametrize("loss, split", [(case[0], case[1]) for case in LOSS_CASES if case[2]])
def test_distributed_losses_give_the_global_batch_values_and_gradients(distributed_results, loss, split):
    expected_values, expected_grads = _single_process_loss(loss)
    for results in distributed_results:
        result = results["losses"][(loss, split, True)]
        assert result["values"].keys() == expected_values.keys()
        for key, value in expected_values.items():
            torch.testing.assert_close(result["values"][key], value, rtol=1e-5, atol=1e-6)
        for actual, expected in zip(result["grads"], expected_grads):
            torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5)


def test_local_dice_under_ddp_is_not_the_global_gradient(distributed_results):
    """Why the reducer exists: averaging per-process Dice gradients is wrong even for equal
    local batches (the test above would catch a reducer that did nothing)."""
    _, expected_grads = _single_process_loss("dice")
    local_grads = distributed_results[0]["losses"][("dice", "equal", False)]["grads"]
    assert not torch.allclose(local_grads[0], expected_grads[0], rtol=1e-3, atol=1e-4)


# ---------------------------------------------------------------------------------------
# One process (no process group)


@pytest.mark.parametrize("affine, momentum", [(True, 0.1), (False, 0.1), (True, None)])
def test_without_process_group_it_is_batch_norm_2d_bit_for_bit(affine, momentum):
    assert distributed_world_size() == 1
    synced, plain = _new_bn(DistributedBatchNorm2d, affine, momentum), _new_bn(nn.BatchNorm2d, affine, momentum)
    for step in range(BN_STEPS):
        x, upstream = _bn_inputs(step)
        outputs, grads = [], []
        for bn in (synced, plain):
            x_leaf = x.clone().requires_grad_()
            y = bn.train()(x_leaf)
            (y * upstream).sum().backward()
            outputs.append(y)
            grads.append(x_leaf.grad)
        assert torch.equal(*outputs) and torch.equal(*grads)
    for key, value in plain.state_dict().items():
        assert torch.equal(synced.state_dict()[key], value), key
    for (_, synced_param), (_, plain_param) in zip(synced.named_parameters(), plain.named_parameters()):
        assert torch.equal(synced_param.grad, plain_param.grad)
    x_eval = _bn_inputs(BN_STEPS)[0]
    assert torch.equal(synced.eval()(x_eval), plain.eval()(x_eval))


def _generator_with_statistics() -> nn.Module:
    """The small generator after one training step, so its running statistics are not the
    initial zeros and ones."""
    generator = _small_generator()
    with torch.no_grad():
        generator(_generator_inputs()[0][:2])
    return generator


def test_gloo_conversion_keeps_keys_and_values_and_loads_a_plain_state_dict():
    plain = _generator_with_statistics()
    before = copy.deepcopy(plain.state_dict())
    converted = convert_batch_norms_for_distributed(copy.deepcopy(plain), "gloo")
    norms = [m for m in converted.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(type(m) is DistributedBatchNorm2d for m in norms)
    assert converted.head_0.norm_0.param_free_norm.weight is None
    state = converted.state_dict()
    assert list(state) == list(before)
    assert "head_0.norm_0.param_free_norm.running_mean" in state
    assert all(torch.equal(state[key], value) for key, value in before.items())
    converted.load_state_dict(_small_generator().state_dict(), strict=True)
    plain.load_state_dict(_small_generator().state_dict(), strict=True)
    segmap = _generator_inputs()[0][:2]
    assert torch.equal(converted(segmap), plain(segmap))  # no process group: BatchNorm2d itself


def test_nccl_conversion_is_torch_sync_batch_norm_with_the_same_keys():
    plain = _generator_with_statistics()
    keys = list(plain.state_dict())
    for source in (copy.deepcopy(plain), convert_batch_norms_for_distributed(copy.deepcopy(plain), "gloo")):
        converted = convert_batch_norms_for_distributed(source, "nccl")
        assert isinstance(converted.head_0.norm_0.param_free_norm, nn.SyncBatchNorm)
        assert not any(isinstance(m, nn.BatchNorm2d) for m in converted.modules())
        assert list(converted.state_dict()) == keys
    assert isinstance(convert_sync_norms(copy.deepcopy(plain)).up_0.norm_0.param_free_norm, nn.SyncBatchNorm)
    with pytest.raises(ValueError, match="backend"):
        convert_batch_norms_for_distributed(plain)  # no process group to read the backend from


def test_conversion_of_a_lone_batch_norm_returns_a_new_layer_sharing_its_tensors():
    bn = _new_bn(nn.BatchNorm2d, True, None).eval()
    converted = convert_batch_norms_for_distributed(bn, "gloo")
    assert type(converted) is DistributedBatchNorm2d and not converted.training
    assert converted.momentum is None and converted.weight is bn.weight and converted.running_var is bn.running_var


def test_frozen_norm_statistics_on_a_converted_generator():
    generator = convert_batch_norms_for_distributed(_generator_with_statistics(), "gloo")
    reference = copy.deepcopy(generator)
    before = copy.deepcopy(generator.state_dict())
    segmap = _generator_inputs()[0][:2]
    with torch.no_grad(), frozen_norm_statistics(generator):
        frozen = generator(segmap)
    for key, value in before.items():
        assert torch.equal(generator.state_dict()[key], value), key
    for module in reference.modules():  # the same batch statistics, no power iteration
        if hasattr(module, "weight_u"):
            module.eval()
    with torch.no_grad():
        assert torch.equal(frozen, reference(segmap))
    assert reference.head_0.norm_0.param_free_norm.num_batches_tracked.item() == 2


def test_global_sums_without_process_group_is_the_identity():
    sums = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    assert global_sums(sums) is sums


def test_losses_without_reducer_are_bit_identical_to_the_seed_formulas():
    images, heatmaps, pafs, belt = _loss_batch()
    out = _loss_net()(images)
    pred_heatmaps, pred_pafs, pred_belt = out[:, :2], out[:, 2:4], torch.sigmoid(out[:, 4:5])
    p, t = pred_belt.reshape(-1).float(), belt.reshape(-1).float()
    seed_dice = 1 - (2 * (p * t).sum() + 1.0) / (p.sum() + t.sum() + 1.0)
    seed_dice_bce = F.binary_cross_entropy(p, t) + seed_dice
    seed_total = (
        F.mse_loss(pred_heatmaps, heatmaps, reduction="sum") / GLOBAL_BATCH
        + F.mse_loss(pred_pafs, pafs, reduction="sum") / GLOBAL_BATCH
        + 500.0 * seed_dice_bce
    )
    assert torch.equal(dice_loss(pred_belt, belt), seed_dice)
    assert torch.equal(dice_bce_loss(pred_belt, belt), seed_dice_bce)
    losses = nadsnet_loss(pred_heatmaps, pred_pafs, pred_belt, heatmaps, pafs, belt)
    assert torch.equal(losses["total"], seed_total) and torch.equal(losses["dice"], seed_dice)
    # With the reducer but no process group: the same values (sums instead of means).
    reduced = nadsnet_loss(pred_heatmaps, pred_pafs, pred_belt, heatmaps, pafs, belt, reducer=global_sums)
    assert reduced.keys() == losses.keys()
    for key, value in losses.items():
        torch.testing.assert_close(reduced[key], value, rtol=1e-6, atol=1e-6)
        assert reduced[key].dtype == value.dtype
