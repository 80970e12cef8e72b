"""Where the GAN and NADS-Net run.

The seed split the work over two GPUs (the GAN on cuda:0, NADS-Net on cuda:1) because it did
not fit one 11 GB card. Defaults here: two or more GPUs -> that split; one GPU -> both on it;
no GPU -> the CPU. Explicit `--gan-device` / `--nadsnet-device` values override the defaults.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Iterable

import torch

from common.errors import OptionError


def parse_device(name: str) -> torch.device:
    """'cpu', 'cuda', 'cuda:1', 'mps' -> torch.device, with a clear error if it does not exist."""
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise OptionError(f"unknown device {name!r}: {error}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise OptionError(f"device {name!r} was asked for, but no CUDA GPU is available")
        index = device.index if device.index is not None else 0
        if index >= torch.cuda.device_count():
            raise OptionError(
                f"device {name!r} was asked for, but only {torch.cuda.device_count()} GPU(s) exist"
            )
        device = torch.device("cuda", index)
    return device


def process_devices(local_rank: int, local_world_size: int, gpu_count: int) -> tuple[str, str]:
    """(GAN device, NADS-Net device) of one process, by the machine's shape (the rule docs/multi-gpu.md
    states, one pure function).

    The seed's split inside each process: with two GPUs per process, process r of a machine
    takes GPU 2r for the GAN and 2r + 1 for NADS-Net (one process: cuda:0 and cuda:1); with one
    GPU per process both share GPU r; without GPUs both run on the CPU. Fewer GPUs than
    processes on a machine is refused.
    """
    if gpu_count == 0:
        return "cpu", "cpu"
    if gpu_count >= 2 * local_world_size:
        return f"cuda:{2 * local_rank}", f"cuda:{2 * local_rank + 1}"
    if gpu_count >= local_world_size:
        return f"cuda:{local_rank}", f"cuda:{local_rank}"
    raise OptionError(f"{local_world_size} processes on this machine but only {gpu_count} GPU(s): "
                     f"run at most {gpu_count} processes per machine (torchrun --nproc_per_node)")


def gpu_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def resolve_devices(
    gan_device: str | None = None, nadsnet_device: str | None = None, gpus: int | None = None,
    local_rank: int = 0, local_world_size: int = 1,
) -> tuple[torch.device, torch.device]:
    """The devices to use: explicit names where given, `process_devices` elsewhere."""
    default_gan, default_nadsnet = process_devices(local_rank, local_world_size, gpu_count() if gpus is None else gpus)
    gan = parse_device(gan_device or default_gan)
    nadsnet = parse_device(nadsnet_device or default_nadsnet)
    return gan, nadsnet


def describe_placement(gan: torch.device, nadsnet: torch.device) -> str:
    """One line for the start of a run, e.g. 'devices: GAN on cuda:0, NADS-Net on cuda:1'."""

    def label(device: torch.device) -> str:
        if device.type == "cuda":
            return f"{device} ({torch.cuda.get_device_name(device)})"
        return str(device)

    return f"devices: GAN on {label(gan)}, NADS-Net on {label(nadsnet)}"


@dataclass(frozen=True)
class Placement:
    """Where a run puts its networks: the GAN (generator, discriminator, VGG) and NADS-Net."""

    gan: torch.device
    nadsnet: torch.device


def place_networks(options: Any, log: Any, job: Any, generator_used: bool = True) -> Placement:
    """The process's devices from --gan-device / --nadsnet-device, the GPUs present and its
    place in the job (common.parallel.distributed), said in one line per process; cuDNN autotuning on
    GPUs; on the CPU, --lean-memory."""
    gan, nadsnet = resolve_devices(options.gan_device, options.nadsnet_device, local_rank=job.local_rank,
                                   local_world_size=job.local_world_size)
    line = describe_placement(gan, nadsnet) if generator_used else f"devices: NADS-Net on {nadsnet}"
    if job.distributed:
        line += f" ({job.describe()})"
    if job.is_main:
        log.info(line)
    else:
        print(line, flush=True)  # every process says where it runs; only process 0 logs
    if "cuda" in (gan.type, nadsnet.type):
        torch.backends.cudnn.benchmark = True
    tune_allocator_for(getattr(options, "lean_memory", False), gan)
    return Placement(gan, nadsnet)


def gpu_available() -> bool:
    return torch.cuda.is_available() and torch.cuda.device_count() > 0


AMP_MODES = ("off", "bf16", "fp16")


def optimizer_implementation(device: torch.device) -> dict[str, bool]:
    """Keyword arguments that pick torch.optim's implementation (SGD, Adam, AdamW) for
    parameters on `device`: on the CPU the fused kernel, one pass over each parameter's value,
    gradient and state instead of a separate float32 operation for each term of the update
    (the same update up to float32 rounding; docs/performance.md has what it saves); elsewhere
    PyTorch's default, as the seed ran it."""
    return {"fused": True} if torch.device(device).type == "cpu" else {}


def at_least_float32(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` in float32 when it is in a narrower floating type (bfloat16, float16 under
    autocast), unchanged otherwise (float32 and float64 stay as they are)."""
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))


def cpu_bf16_supported() -> bool:
    """Whether this CPU computes bfloat16 in its own instructions (AVX512-BF16 or AMX tiles)
    and PyTorch has oneDNN, which runs autocast's bf16 convolutions and matmuls on them.
    Without them oneDNN emulates bfloat16 in float32 instructions, which is no faster."""
    if not torch.backends.mkldnn.is_available():
        return False
    checks = (getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    return any(check() for check in checks if check is not None)


def amp_problem(amp: str, device_types: Iterable[str]) -> str | None:
    """Why `amp` cannot run on devices of these types ('cpu', 'cuda', ...), or None.

    fp16 training needs loss scaling, which PyTorch runs on CUDA only: without it small
    gradients flush to zero. bf16 has float32's exponent range and needs none."""
    if amp == "fp16" and any(kind != "cuda" for kind in device_types):
        return "fp16 needs CUDA (its training needs loss scaling, which runs on CUDA only); on a CPU use --amp bf16"
    return None


def autocast_context(device: torch.device, amp: str):
    """torch.autocast for `amp` in {'off', 'bf16', 'fp16'} on `device` (a no-op context for 'off').

    Autocast runs convolutions, linear layers and matmuls in the lower precision and keeps
    reductions, losses and normalisation statistics in float32 (PyTorch's autocast op lists)."""
    if amp == "off":
        return torch.autocast(device_type=device.type, enabled=False)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    return torch.autocast(device_type=device.type, dtype=dtype)


# Allocations at least this large are served by mmap and handed back to the OS when freed.
MMAP_THRESHOLD_BYTES = 1 << 20


def convolution_memory_format(device: torch.device) -> torch.memory_format:
    """The layout the GAN's networks train in on `device`: channels_last on the CPU, where
    oneDNN convolves NHWC tensors without reordering them to and from its blocked layout
    (docs/performance.md), the default elsewhere (no gain shown on GPUs, so left as the seed
    ran it)."""
    return torch.channels_last if device.type == "cpu" else torch.contiguous_format


@functools.cache
def _glibc() -> Any:
    """ctypes handle of glibc, or None where the C library is another (musl, macOS, Windows)."""
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


# release_free_heap_pages acts only above this much free heap memory: below it the pages handed
# back are faulted in again at the next step, which costs more time than the memory saved is worth.
RELEASE_ABOVE_FREE_BYTES = 256 << 20


@functools.cache
def _mallinfo2() -> Any:
    """glibc's mallinfo2 with its result type declared, or None without glibc 2.33 or later."""
    import ctypes

    libc = _glibc()
    if libc is None or not hasattr(libc, "mallinfo2"):
        return None

    class MallInfo2(ctypes.Structure):  # <malloc.h>, ten size_t fields
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

    libc.mallinfo2.restype = MallInfo2
    return libc.mallinfo2


def free_heap_bytes() -> int | None:
    """Bytes free inside glibc's heaps, all arenas (mallinfo2's fordblks); None without
    glibc 2.33 or later."""
    mallinfo2 = _mallinfo2()
    return None if mallinfo2 is None else int(mallinfo2().fordblks)


def release_free_heap_pages(device: torch.device, above_bytes: int = RELEASE_ABOVE_FREE_BYTES) -> bool:
    """On a CPU run with glibc, when more than `above_bytes` lie free inside malloc's heaps:
    hand their pages back to the OS (malloc_trim(0)). Returns whether it did.

    glibc serves tensors of up to 32 MiB from its heaps, and the holes that freed activations
    leave there stay resident. Called where a GAN step has just freed a loss branch's
    activations, it keeps the peak resident size close to the live tensors (docs/performance.md)
    at little cost in time, unlike `return_freed_memory_to_os`, whose page faults slow every
    step. Small runs hold little free heap and are left alone (see RELEASE_ABOVE_FREE_BYTES).
    """
    if device.type != "cpu" or _glibc() is None:
        return False
    free = free_heap_bytes()
    if free is not None and free <= above_bytes:
        return False
    _glibc().malloc_trim(0)
    return True


def return_freed_memory_to_os(threshold_bytes: int = MMAP_THRESHOLD_BYTES) -> bool:
    """glibc only: make freed tensor memory leave the process instead of staying in the heap.

    By default glibc raises its mmap threshold (up to 32 MiB) every time a large block is
    freed, after which tensors of up to that size come from the heap, whose freed memory stays
    resident. Fixing the threshold (which also fixes the trim threshold) keeps the resident
    size at the live tensors: the lowest peak of these options (docs/performance.md), paid
    for in page faults on fresh pages at every step. Returns False where it does not apply (not glibc).
    """
    libc = _glibc()
    if libc is None:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    return bool(libc.mallopt(m_mmap_threshold, threshold_bytes)) and bool(libc.mallopt(m_trim_threshold, threshold_bytes))


def tune_allocator_for(lean_memory: bool, device: torch.device) -> bool:
    """--lean-memory on a CPU run: return_freed_memory_to_os(). Off by default: it lowers
    the peak resident memory only a little and costs time in page faults (docs/performance.md)."""
    if lean_memory and device.type == "cpu":
        return return_freed_memory_to_os()
    return False
