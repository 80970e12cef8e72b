"""Measurement helpers shared by the benchmarks: timing, FLOP counting, peak memory, rows.

- Time: the median of K timed iterations, after one warm-up iteration (allocator, oneDNN /
  cuDNN kernel selection, lazy optimiser state). CUDA work is synchronised around each one.
- FLOPs: `torch.utils.flop_counter.FlopCounterMode` over the warm-up iteration (forward and
  backward; matmul/convolution/attention FLOPs, which dominate; element-wise ops are not counted).
- Peak memory, over the timed iterations (steady state: weights, optimiser state, gradients and
  the largest set of live activations):
  * GPU: `torch.cuda.max_memory_allocated` after `reset_peak_memory_stats`;
  * CPU on Linux: the kernel's resident-set high-water mark (`VmHWM` in /proc/self/status),
    reset just before the timed iterations by writing 5 to /proc/self/clear_refs, so it is the
    peak of the measured section, not of the whole process (building, FLOP counting);
  * elsewhere: `ru_maxrss` (the whole process's lifetime peak; the row says so).
  Every row also carries `peak_rss_process_gb`, the process's lifetime peak (`ru_maxrss`).
"""

from __future__ import annotations

import collections
import os
import re
import resource
import statistics
import sys
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode

GIB = 1024**3
_STATUS = "/proc/self/status"
_CLEAR_REFS = "/proc/self/clear_refs"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def process_peak_rss_gb() -> float:
    """The process's lifetime peak resident memory (Linux reports ru_maxrss in KiB)."""
    scale = 1 if sys.platform == "darwin" else 1024  # macOS reports bytes
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / GIB


def _vm_hwm_gb() -> float | None:
    try:
        with open(_STATUS, encoding="ascii") as handle:
            match = re.search(r"^VmHWM:\s+(\d+) kB", handle.read(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) * 1024 / GIB if match else None


def _reset_vm_hwm() -> bool:
    """Reset the resident high-water mark to the current RSS (Linux >= 4.0); False if impossible."""
    try:
        with open(_CLEAR_REFS, "w", encoding="ascii") as handle:
            handle.write("5")
    except OSError:
        return False
    return _vm_hwm_gb() is not None


class PeakMemory:
    """Context manager: the peak memory of the code inside it, in GiB (`peak_gb`, `kind`)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak_gb = float("nan")
        self.kind = ""
        self._section = False
        self.cpu_user_s = self.cpu_system_s = float("nan")

    def __enter__(self) -> "PeakMemory":
        self._cpu_start = os.times()
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self._section = _reset_vm_hwm()
        return self

    def __exit__(self, *exc: object) -> None:
        end = os.times()
        # CPU seconds of this process (all threads) inside the section: less sensitive to other
        # processes on a shared machine than wall time, though contention still inflates it.
        self.cpu_user_s = end.user - self._cpu_start.user
        self.cpu_system_s = end.system - self._cpu_start.system
        if self.device.type == "cuda":
            synchronize(self.device)
            self.peak_gb = torch.cuda.max_memory_allocated(self.device) / GIB
            self.kind = "cuda max_memory_allocated over the timed iterations"
        elif self._section:
            self.peak_gb = _vm_hwm_gb()
            self.kind = "resident (VmHWM) over the timed iterations"
        else:
            self.peak_gb = process_peak_rss_gb()
            self.kind = "resident (ru_maxrss), whole process lifetime"


def count_flops(step: Callable[[], Any]) -> tuple[Any, int]:
    """Run `step` once under the FLOP counter; returns (its result, FLOPs)."""
    with FlopCounterMode(display=False) as counter:
        result = step()
    return result, counter.get_total_flops()


class PrecisionProfile(TorchDispatchMode):
    """Wall seconds and calls of every ATen operation run inside it (backward included), keyed
    by (operation, precision of its floating-point tensor inputs: 'bfloat16', 'float32',
    'mixed' or 'none'): where the time goes and what autocast leaves in float32. Each operation
    is timed alone (CPU work is synchronous), so the sum is a little above the step's time."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: dict[tuple[str, str], float] = collections.defaultdict(float)
        self.calls: dict[tuple[str, str], int] = collections.defaultdict(int)

    @staticmethod
    def precision(args: Any, kwargs: Any) -> str:
        dtypes = {value.dtype for value in tree_flatten((args, kwargs))[0]
                  if isinstance(value, torch.Tensor) and value.is_floating_point()}
        if not dtypes:
            return "none"
        return str(dtypes.pop()).removeprefix("torch.") if len(dtypes) == 1 else "mixed"

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        start = time.perf_counter()
        out = func(*args, **kwargs)
        key = (func.overloadpacket.__name__, self.precision(args, kwargs))
        self.seconds[key] += time.perf_counter() - start
        self.calls[key] += 1
        return out

    def summary(self, top: int = 25) -> dict[str, Any]:
        """{'seconds_by_precision': {precision: s}, 'top': [[operation, precision, s, calls], ...]}."""
        by_precision: dict[str, float] = collections.defaultdict(float)
        for (_, precision), seconds in self.seconds.items():
            by_precision[precision] += seconds
        ranked = sorted(self.seconds.items(), key=lambda item: -item[1])[:top]
        return {"seconds_by_precision": {key: round(value, 4) for key, value in sorted(by_precision.items())},
                "top": [[name, precision, round(seconds, 4), self.calls[(name, precision)]]
                        for (name, precision), seconds in ranked]}


def profile_precision(step: Callable[[], Any], top: int = 25) -> dict[str, Any]:
    """One call of `step` under PrecisionProfile; its summary (see PrecisionProfile.summary)."""
    with PrecisionProfile() as profile:
        step()
    return profile.summary(top)


def time_iterations(step: Callable[[], Any], iters: int, device: torch.device) -> list[float]:
    """Seconds of each of `iters` calls of `step`, synchronised on CUDA."""
    times = []
    for _ in range(iters):
        synchronize(device)
        start = time.perf_counter()
        step()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def measurement_row(name: str, times: list[float], flops: int | None, memory: PeakMemory, **extra: Any) -> dict[str, Any]:
    """One JSON-able row with the required keys (name, median_s, gflops, gflops_per_s,
    peak_memory_gb) and the extras."""
    median = statistics.median(times)
    gflops = flops / 1e9 if flops is not None else None
    row: dict[str, Any] = {
        "name": name,
        "median_s": median,
        "gflops": gflops,
        "gflops_per_s": gflops / median if gflops is not None and median > 0 else None,
        "peak_memory_gb": memory.peak_gb,
        "memory_kind": memory.kind,
        "cpu_user_s_per_rep": memory.cpu_user_s / len(times),
        "cpu_system_s_per_rep": memory.cpu_system_s / len(times),
        "times_s": [round(t, 4) for t in times],
        "peak_rss_process_gb": process_peak_rss_gb(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": load_average(),
    }
    row.update(extra)
    return row


def measure(
    name: str,
    step: Callable[[], Any],
    iters: int,
    device: torch.device,
    count: bool = True,
    **extra: Any,
) -> dict[str, Any]:
    """Warm up once (FLOP-counted when `count`), then time `iters` calls; one row."""
    if count:
        synchronize(device)
        _, flops = count_flops(step)
    else:
        step()
        flops = None
    synchronize(device)
    with PeakMemory(device) as memory:
        times = time_iterations(step, iters, device)
    return measurement_row(name, times, flops, memory, **extra)


@contextmanager
def quiet_stdout() -> Iterator[None]:
    """Send prints of the code under test to stderr, so that --json output stays parseable."""
    saved = sys.stdout
    sys.stdout = sys.stderr
    try:
        yield
    finally:
        sys.stdout = saved


class StderrLog:
    """The `log` object gan.train.build_model expects, writing to stderr."""

    def info(self, message: str) -> None:
        print(message, file=sys.stderr)


def synthetic_poses(batch: int, size: int, people: int = 2, seed: int = 0) -> torch.Tensor:
    """(B, people, 9, 2) float32 keypoints in input pixels: seated figures side by side, jittered,
    with one keypoint missing (NaN) in the first sample. Only the shapes matter for speed; the
    maps still look like real poses."""
    from common.posedata.pose import NUM_KEYPOINTS

    # A seated person in fractions of its half of the frame (x, y), keypoint order of common.posedata.pose.
    template = torch.tensor(
        [(0.30, 0.62), (0.32, 0.48), (0.38, 0.32), (0.50, 0.30), (0.62, 0.32),
         (0.68, 0.48), (0.70, 0.62), (0.44, 0.76), (0.56, 0.76)]
    )
    assert template.shape[0] == NUM_KEYPOINTS
    generator = torch.Generator().manual_seed(seed)
    offsets = torch.arange(people, dtype=torch.float32).view(1, people, 1, 1) / people
    x = (template[:, 0].view(1, 1, -1, 1) / people + offsets)
    y = template[:, 1].view(1, 1, -1, 1).expand(1, people, -1, 1)
    keypoints = torch.cat([x.expand(batch, people, -1, 1), y.expand(batch, people, -1, 1)], dim=-1) * size
    keypoints = keypoints + torch.randn(keypoints.shape, generator=generator) * size * 0.01
    keypoints[0, 0, 0] = float("nan")
    return keypoints.contiguous()


def synthetic_batch(batch: int, size: int, seed: int = 0) -> dict[str, Any]:
    """A collate_poses-like batch: random images in [-1, 1] (stored ImageNet-normalised, as the
    dataset gives them), a diagonal seatbelt band, synthetic poses (augmented = unaugmented)."""
    from common.posedata.imaging import gan_to_imagenet

    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, 3, size, size, generator=generator) * 2 - 1
    rows = torch.arange(size).view(-1, 1)
    cols = torch.arange(size).view(1, -1)
    band = ((rows - cols).abs() < max(2, size // 24)).float()
    keypoints = synthetic_poses(batch, size, seed=seed)
    return {
        "image": gan_to_imagenet(images),
        "seatbelt": band.expand(batch, 1, size, size).contiguous(),
        "keypoints": keypoints,
        "augmented_keypoints": keypoints.clone(),
        "image_id": [f"synthetic_{i}" for i in range(batch)],
        "index": torch.arange(batch),
    }
