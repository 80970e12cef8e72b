"""The job a run belongs to: one process, or one of N under `torchrun` (DistributedDataParallel).

`torchrun --nproc_per_node N train_gan.py ...` starts N processes with RANK, WORLD_SIZE,
LOCAL_RANK and LOCAL_WORLD_SIZE in their environment (several machines: torchrun's own
`--nnodes`, `--rdzv-backend c10d`, `--rdzv-endpoint`; no launcher code of ours). `start_job`
reads them, picks the process's devices by `process_devices` and joins the process group:
NCCL when the process trains on CUDA, gloo on the CPU. Without torchrun it is a job of one.

What the run skeleton (common.training.run) does with it:
- `--batch-size` is the global batch; process r trains on its share of each global batch, in
  the order one process would use (common.posedata.sampling.ResumableSampler);
- only process 0 writes (checkpoints, states, pages, logs, TensorBoard) and holds the lock;
- decisions are agreed at every batch boundary (`any_process`): a stop request on any process
  stops all of them at the same batch; a non-finite loss on any process skips or stops the
  batch everywhere, so the weights never drift apart;
- a collective that fails because a peer died (`PeerLost`) ends the process without saving;
  torchrun itself takes the rest of the job down when one process exits.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from common.parallel.devices import gpu_count, process_devices

# Collectives wait this long for a slow peer (a save, a picture, building the synthetic set on
# process 0) before failing; a dead peer fails them at once on gloo, and torchrun ends the job.
COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=10)


class PeerLost(RuntimeError):
    """Another process of the job ended: this one stops too, saving nothing."""


@dataclass(frozen=True)
class Job:
    """This process's place in the job. A job of one: rank 0 of 1, no process group."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    backend: str = ""

    @property
    def distributed(self) -> bool:
        """Started by torchrun (a process group exists), whatever the number of processes."""
        return bool(self.backend)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def describe(self) -> str:
        if not self.distributed:
            return "one process"
        return f"process {self.rank} of {self.world_size} ({self.backend}, local rank {self.local_rank})"


SINGLE_PROCESS = Job()
_JOB = SINGLE_PROCESS


def current_job() -> Job:
    """The job `start_job` joined (a job of one before that, and without torchrun)."""
    return _JOB


def torchrun_environment() -> tuple[int, int, int, int] | None:
    """(rank, world size, local rank, local world size) set by torchrun, or None."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    world = int(os.environ["WORLD_SIZE"])
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    return int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", 0)), local_world


def start_job(gan_device: str | None = None) -> Job:
    """Join torchrun's process group (once per process); a job of one without torchrun.
    `gan_device`: --gan-device, when given (its type picks the backend)."""
    global _JOB
    environment = torchrun_environment()
    if environment is None or _JOB.distributed:
        return _JOB
    rank, world, local_rank, local_world = environment
    gan_device = gan_device or process_devices(local_rank, local_world, gpu_count())[0]
    backend = "nccl" if gan_device.startswith("cuda") else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(torch.device(gan_device))
    dist.init_process_group(backend=backend, timeout=COLLECTIVE_TIMEOUT)
    _JOB = Job(rank, world, local_rank, local_world, backend)
    return _JOB


def _collective_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if _JOB.backend == "nccl" else torch.device("cpu")


def largest_over_processes(value: int) -> int:
    """The largest of every process's `value` (one small all-reduce; `value` alone in a job of one)."""
    if not _JOB.distributed:
        return value
    tensor = torch.tensor([float(value)], device=_collective_device())
    try:
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    except RuntimeError as error:
        raise PeerLost(f"another process of the job ended ({str(error).splitlines()[0][:120]})") from None
    return int(tensor.item())


def any_process(flag: bool) -> bool:
    """True when `flag` is True on any process of the job."""
    return bool(largest_over_processes(int(flag)))


def is_peer_failure(error: BaseException) -> bool:
    """Did a collective fail because another process of the job went away?"""
    if isinstance(error, PeerLost):
        return True
    if not _JOB.distributed or not isinstance(error, RuntimeError):
        return False
    text = str(error)
    return isinstance(error, getattr(dist, "DistError", ())) or any(
        word in text for word in ("gloo", "Connection closed", "Connection reset", "NCCL", "Broken pipe"))


def mean_over_processes(values: list[float]) -> list[float]:
    """Every process's `values` averaged (each process's loss means of its share of the batch:
    their mean is the global batch's, the shares being equal); unchanged in a job of one."""
    if not _JOB.distributed:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=_collective_device())
    sum_over_processes(tensor)
    return (tensor / _JOB.world_size).tolist()


def sum_over_processes(tensor: torch.Tensor) -> None:
    """Sum `tensor` over the job's processes, in place (e.g. validation counts)."""
    try:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    except RuntimeError as error:
        raise PeerLost(f"another process of the job ended ({str(error).splitlines()[0][:120]})") from None


def broadcast_from_main(value):
    """Process 0's `value` (any picklable object) on every process."""
    if not _JOB.distributed:
        return value
    holder = [value]
    try:
        dist.broadcast_object_list(holder, src=0)
    except RuntimeError as error:
        raise PeerLost(f"another process of the job ended ({str(error).splitlines()[0][:120]})") from None
    return holder[0]


def end_job() -> None:
    """Leave the process group (at the end of a run)."""
    global _JOB
    if _JOB.distributed and dist.is_initialized():
        dist.destroy_process_group()
    _JOB = SINGLE_PROCESS
