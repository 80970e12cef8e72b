"""Where the GAN and NADS-Net run.

The seed split the work over two GPUs (the GAN on cuda:0, NADS-Net on cuda:1) because it did
not fit one 11 GB card. Defaults here: two or more GPUs -> that split; one GPU -> both on it;
no GPU -> the CPU. Explicit `--gan-device` / `--nadsnet-device` values override the defaults.
"""

from __future__ import annotations

import torch


def parse_device(name: str) -> torch.device:
    """'cpu', 'cuda', 'cuda:1', 'mps' -> torch.device, with a clear error if it does not exist."""
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"unknown device {name!r}: {error}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} was asked for, but no CUDA GPU is available")
        index = device.index if device.index is not None else 0
        if index >= torch.cuda.device_count():
            raise ValueError(
                f"device {name!r} was asked for, but only {torch.cuda.device_count()} GPU(s) exist"
            )
        device = torch.device("cuda", index)
    return device


def default_devices(gpu_count: int | None = None) -> tuple[torch.device, torch.device]:
    """(GAN device, NADS-Net device) by the number of visible GPUs."""
    if gpu_count is None:
        gpu_count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpu_count >= 2:
        return torch.device("cuda", 0), torch.device("cuda", 1)
    if gpu_count == 1:
        return torch.device("cuda", 0), torch.device("cuda", 0)
    return torch.device("cpu"), torch.device("cpu")


def resolve_devices(
    gan_device: str | None = None, nadsnet_device: str | None = None, gpu_count: int | None = None
) -> tuple[torch.device, torch.device]:
    """The devices to use: explicit names where given, the defaults elsewhere."""
    default_gan, default_nadsnet = default_devices(gpu_count)
    gan = parse_device(gan_device) if gan_device else default_gan
    nadsnet = parse_device(nadsnet_device) if nadsnet_device else default_nadsnet
    return gan, nadsnet


def describe_placement(gan: torch.device, nadsnet: torch.device) -> str:
    """One line for the start of a run, e.g. 'devices: GAN on cuda:0, NADS-Net on cuda:1'."""

    def label(device: torch.device) -> str:
        if device.type == "cuda":
            return f"{device} ({torch.cuda.get_device_name(device)})"
        return str(device)

    return f"devices: GAN on {label(gan)}, NADS-Net on {label(nadsnet)}"


def gpu_available() -> bool:
    return torch.cuda.is_available() and torch.cuda.device_count() > 0


def autocast_context(device: torch.device, amp: str):
    """torch.autocast for `amp` in {'off', 'bf16', 'fp16'} on `device` (a no-op context for 'off')."""
    if amp == "off":
        return torch.autocast(device_type=device.type, enabled=False)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    return torch.autocast(device_type=device.type, dtype=dtype)
