"""Operations that span all processes of a torch.distributed job, on any backend (gloo on CPU).

- `distributed_world_size(group)`: processes in `group`; 1 when no process group is active.
- `global_sums(local_sums, group)`: a differentiable all-reduce (sum) of a tensor of sums;
  the identity without a process group. Losses that are not means over samples (Dice) are
  computed from these global sums under DDP (`common.models.losses`, argument `reducer`).
- `DistributedBatchNorm2d`: an `nn.BatchNorm2d` whose training-mode statistics span every
  process's samples. `nn.SyncBatchNorm` does this on CUDA only; this one runs wherever
  `torch.distributed.all_reduce` does. `common.models.normalization.
  convert_batch_norms_for_distributed` picks one of the two for a backend.

Gradient convention. DistributedDataParallel averages each parameter's gradient over the P
processes: it descends J = (1/P) sum_j L_j, where L_j is the loss process j computed. The
collectives here are written so that every process's `backward` returns d(sum_j L_j)/d(its
own inputs); DDP's average then equals the gradient one process would get on the global
batch whenever every L_j is the global-batch loss (see `common.models.losses` for the rule
per loss term).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.autograd.function import once_differentiable

# Batch-norm statistics are taken over the batch and the spatial axes of (B, C, H, W).
_REDUCED_DIMS = (0, 2, 3)


def distributed_world_size(group: dist.ProcessGroup | None = None) -> int:
    """Number of processes in `group` (None: the default group); 1 without a process group."""
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size(group)


def _per_channel(values: torch.Tensor) -> torch.Tensor:
    """(C,) -> (1, C, 1, 1), to broadcast over (B, C, H, W)."""
    return values.view(1, -1, 1, 1)


class _SumOverProcesses(torch.autograd.Function):
    """all_reduce(SUM) whose backward is also an all_reduce(SUM) of the incoming gradients.

    Why the backward sums: every process's loss L_j depends on the same total, so
    d(sum_j L_j)/d(local_i) = sum_j dL_j/d(total), which only the sum over processes gives.
    """

    @staticmethod
    def forward(ctx, local: torch.Tensor, group: dist.ProcessGroup | None) -> torch.Tensor:
        ctx.group = group
        total = local.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total, op=dist.ReduceOp.SUM, group=group)
        return total

    @staticmethod
    def backward(ctx, grad_total: torch.Tensor) -> tuple[torch.Tensor, None]:
        grad_local = grad_total.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad_local, op=dist.ReduceOp.SUM, group=ctx.group)
        return grad_local, None


def global_sums(local_sums: torch.Tensor, group: dist.ProcessGroup | None = None) -> torch.Tensor:
    """Element-wise sum of `local_sums` (any shape) over the processes of `group`, differentiable.

    Without a process group (or with one process) it returns `local_sums` itself. Every process
    of the group must call it, in the same order, with a tensor of the same shape and dtype.
    """
    if distributed_world_size(group) == 1:
        return local_sums
    return _SumOverProcesses.apply(local_sums, group)


def global_batch_statistics(
    x: torch.Tensor, group: dist.ProcessGroup | None = None
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Per-channel mean and biased variance of x over every process's samples. No gradient.

    x: this process's (B_local, C, H, W); B_local may differ between processes (even be 0).
    Returns mean (C,), biased variance (C,) in float64, and the global number of values per
    channel N = sum over processes of B_local * H * W. One all_reduce carries, concatenated,
    the per-channel sum, sum of squares and count.

    The local sums are formed from a local `torch.var_mean` as n * mean and n * (var + mean^2)
    and reduced in float64, rather than summing x and x * x in x's dtype: the global variance
    S2/N - mean^2 then cancels only float64 rounding, and the float32 rounding of a local mean
    enters the global variance scaled by (local mean - global mean), not by the mean itself.
    """
    channels = x.shape[1]
    local_count = x.numel() // channels if channels else 0
    with torch.no_grad():
        if local_count == 0:
            local_mean = local_var = x.new_zeros(channels, dtype=torch.float64)
        else:
            stats_dtype = torch.promote_types(x.dtype, torch.float32)
            local_var, local_mean = torch.var_mean(x.to(stats_dtype), dim=_REDUCED_DIMS, correction=0)
            local_var, local_mean = local_var.double(), local_mean.double()
        packed = torch.cat(
            [local_mean * local_count, (local_var + local_mean.square()) * local_count,
             local_mean.new_full((1,), float(local_count))]
        )
        dist.all_reduce(packed, op=dist.ReduceOp.SUM, group=group)
        total_sum, total_sum_of_squares, total_count = packed.split([channels, channels, 1])
        count = int(total_count.item())
        mean = total_sum / max(count, 1)
        biased_var = (total_sum_of_squares / max(count, 1) - mean.square()).clamp_min(0)
    return mean, biased_var, count


class _GlobalBatchNorm(torch.autograd.Function):
    """y = (x - mean) * invstd * weight + bias with statistics of the global batch, and the
    input gradient of batch norm over that global batch.

    Why a Function rather than differentiable collectives around ordinary ops: the exact input
    gradient needs only two per-channel sums over all processes, sum(dy) and sum(dy * x_hat),
    with x_hat recomputed from the saved input, whereas autograd through composed ops would
    keep several activation-sized intermediates alive and sum x * x in x's precision.

    With g = dy, x_hat = (x - mean) * invstd and N the global count, for process i
        dx_i = weight * invstd * (g_i - sum_all(g) / N - x_hat_i * sum_all(g * x_hat) / N),
    i.e. d(sum_j L_j)/dx_i, the slice of the global batch's input gradient. weight and bias
    get this process's own sums: DDP combines them over the processes.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, mean, invstd, count: int, group):
        """x (B, C, H, W); weight, bias (C,) or None; mean, invstd (C,) in x's dtype, global."""
        scale = invstd if weight is None else invstd * weight
        normalized = (x - _per_channel(mean)) * _per_channel(scale)
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.count, ctx.group = count, group
        return normalized if bias is None else normalized + _per_channel(bias)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        x, weight, mean, invstd = ctx.saved_tensors
        x_hat = (x - _per_channel(mean)) * _per_channel(invstd)
        local_grad_bias = grad_output.sum(_REDUCED_DIMS)
        local_grad_weight = (grad_output * x_hat).sum(_REDUCED_DIMS)
        grad_input = None
        if ctx.needs_input_grad[0]:
            totals = torch.cat([local_grad_bias, local_grad_weight])  # a new tensor: reduced in place
            dist.all_reduce(totals, op=dist.ReduceOp.SUM, group=ctx.group)
            mean_grad, mean_grad_x_hat = (totals / ctx.count).chunk(2)
            scale = invstd if weight is None else invstd * weight
            centred = grad_output - _per_channel(mean_grad) - x_hat * _per_channel(mean_grad_x_hat)
            grad_input = centred * _per_channel(scale)
        grad_weight = local_grad_weight if ctx.needs_input_grad[1] else None
        grad_bias = local_grad_bias if ctx.needs_input_grad[2] else None
        return grad_input, grad_weight, grad_bias, None, None, None, None


class DistributedBatchNorm2d(nn.BatchNorm2d):
    """`nn.BatchNorm2d` whose training-mode statistics span all processes of a process group.

    Input and output (B, C, H, W); B may differ between processes. In training mode with a
    process group of more than one process (`process_group`, or the default group when None),
    it normalises with the mean and biased variance of the concatenated global batch, updates
    running_mean / running_var (global unbiased variance) / num_batches_tracked exactly as
    nn.BatchNorm2d would on that batch (momentum None: cumulative average), and its backward
    gives each process its slice of the global batch's input gradient. Every process of the
    group must call it in the same order, also under torch.no_grad. Otherwise (eval mode, no
    process group, one process) it is nn.BatchNorm2d itself: same kernels, same results.

    Parameters, buffers and state_dict keys are those of nn.BatchNorm2d; `process_group` is a
    plain attribute.
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        process_group: dist.ProcessGroup | None = None,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype)
        self.process_group = process_group

    @classmethod
    def from_batch_norm(
        cls, batch_norm: nn.BatchNorm2d, process_group: dist.ProcessGroup | None = None
    ) -> "DistributedBatchNorm2d":
        """A DistributedBatchNorm2d holding `batch_norm`'s own parameters and running buffers
        (the same tensors, so an optimiser built before the conversion still updates them)."""
        converted = cls(
            batch_norm.num_features, batch_norm.eps, batch_norm.momentum, batch_norm.affine,
            batch_norm.track_running_stats, process_group,
        )
        for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            setattr(converted, name, getattr(batch_norm, name))
        converted.train(batch_norm.training)
        if hasattr(batch_norm, "qconfig"):
            converted.qconfig = batch_norm.qconfig
        return converted

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or distributed_world_size(self.process_group) == 1:
            return super().forward(x)
        self._check_input_dim(x)
        mean, biased_var, count = global_batch_statistics(x, self.process_group)
        if count <= 1:
            raise ValueError(
                "Expected more than 1 value per channel when training over all processes, "
                f"got input size {tuple(x.shape)} here"
            )
        self._update_running_statistics(mean, biased_var, count)
        invstd = torch.rsqrt(biased_var + self.eps)
        return _GlobalBatchNorm.apply(
            x, self.weight, self.bias, mean.to(x.dtype), invstd.to(x.dtype), count, self.process_group
        )

    def _update_running_statistics(self, mean: torch.Tensor, biased_var: torch.Tensor, count: int) -> None:
        """Momentum update of the running buffers from global statistics, as nn.BatchNorm2d.

        In place, so that `frozen_norm_statistics`, which swaps in throw-away copies of the
        buffers by attribute assignment, keeps the stored ones untouched.
        """
        if not self.track_running_stats or self.running_mean is None:
            return
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            factor = 1.0 / self.num_batches_tracked.item() if self.momentum is None else self.momentum
            unbiased_var = biased_var * (count / (count - 1))
            self.running_mean.mul_(1 - factor).add_(mean.to(self.running_mean.dtype), alpha=factor)
            self.running_var.mul_(1 - factor).add_(unbiased_var.to(self.running_var.dtype), alpha=factor)
