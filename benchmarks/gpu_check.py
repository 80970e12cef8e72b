"""`python -m benchmarks gpu-check --json`: the checks that need a GPU, as one script.

On a GPU, one JSON line each:
1. `gan-iteration` at 384 px, ngf 64, batch 1, every loss on (hinge, feature matching, VGG19,
   NADS-Net guidance), in fp32, bf16 and fp16: time and peak allocated memory (the goal:
   under 10 GB with mixed precision, so one 11 GB card holds what the seed needed two for);
2. `nadsnet-step` at batch 4 with the generated half;
3. 30 iterations of each training at the seed preset on synthetic frames with the page on
   (printing and pictures every iteration, as the seed): seconds per iteration;
4. `torchrun` with one process on NCCL: a distributed run of a few iterations that ends well.
Without a GPU (`--device cpu`, the default there) it runs the same code paths at tiny sizes
(64 px, ngf 4, 2 iterations; gloo instead of NCCL) so CI checks the script itself.

It needs torch, torchvision, timm, OpenCV, TensorBoard and matplotlib, and of this project's
requirements also tqdm and dominate (pure Python: `pip install tqdm dominate`, or put them on
PYTHONPATH).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]


def _sizes(gpu: bool) -> dict[str, Any]:
    if gpu:
        return {"size": 384, "ngf": 64, "iters": 2, "train_iterations": 30, "frames": 40, "precisions": ("off", "bf16", "fp16")}
    return {"size": 64, "ngf": 4, "iters": 1, "train_iterations": 2, "frames": 6, "precisions": ("off", "bf16")}


def _benchmark_rows(name: str, overrides: dict[str, Any]) -> list[dict[str, Any]]:
    from benchmarks import gan_iteration, nadsnet_step
    from benchmarks.options import build_parser

    args = build_parser().parse_args([name])
    for key, value in overrides.items():
        setattr(args, key, value)
    return {"gan-iteration": gan_iteration.run, "nadsnet-step": nadsnet_step.run}[name](args)


def step_rows(device: str, sizes: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for amp in sizes["precisions"]:
        rows += _benchmark_rows("gan-iteration", dict(size=sizes["size"], ngf=sizes["ngf"], ndf=None, batch=1,
                                                       iters=sizes["iters"], device=device, amp=amp))
    rows += _benchmark_rows("nadsnet-step", dict(size=sizes["size"], ngf=sizes["ngf"], batch=4, iters=sizes["iters"],
                                                  device=device, amp="off", gan_fraction=0.5))
    return rows


def _synthetic_set(directory: Path, frames: int) -> Path:
    from common.synthetic import write_dataset

    write_dataset(directory, frames, 2, seed=7, width=320, height=180)
    return directory


def _training_argv(data: Path, checkpoints: Path, sizes: dict[str, Any], device: str) -> list[str]:
    argv = ["--preset", "seed", "--train-annotations", str(data / "Train_keypoint_Annotation_sample.json"),
            "--images-dir", str(data / "Raw_Images"), "--masks-dir", str(data / "Seatbelt_Mask"),
            "--checkpoints-dir", str(checkpoints), "--max-iterations", str(sizes["train_iterations"]),
            "--num-workers", "2", "--gan-device", device, "--nadsnet-device", device]
    if sizes["size"] != 384:
        argv += ["--image-size", str(sizes["size"])]
    return argv


def training_rows(device: str, sizes: dict[str, Any], work: Path) -> list[dict[str, Any]]:
    """Seconds per iteration of both trainings at the seed preset (page on), the GAN first (its
    generator then feeds NADS-Net's generated half)."""
    data = _synthetic_set(work / "data", sizes["frames"])
    checkpoints = work / "run"
    small = [] if sizes["size"] == 384 else ["--ngf", str(sizes["ngf"]), "--ndf", str(sizes["ngf"])]
    commands = {
        "train_gan.py": _training_argv(data, checkpoints, sizes, device) + small,
        "train_nadsnet.py": _training_argv(data, checkpoints, sizes, device) + [
            "--valid-annotations", str(data / "Valid_keypoint_Annotation_sample.json"), "--gan-fraction", "0.5",
            "--arm-augment", "highly"],
    }
    rows = []
    for script, argv in commands.items():
        started = time.perf_counter()
        result = subprocess.run([sys.executable, script, *argv], cwd=ROOT, capture_output=True, text=True, timeout=600)
        seconds = time.perf_counter() - started
        rows.append({"name": f"{script} --preset seed, {sizes['train_iterations']} iterations, page on",
                     "ok": result.returncode == 0, "seconds_per_iteration": seconds / sizes["train_iterations"],
                     "total_s": seconds, "error": None if result.returncode == 0 else result.stderr.strip()[-400:]})
    return rows


def torchrun_row(device: str, sizes: dict[str, Any], work: Path) -> dict[str, Any]:
    """A one-process torchrun job (NCCL on a GPU, gloo on the CPU) that must end well."""
    data = work / "data"
    argv = _training_argv(data, work / "torchrun", dict(sizes, train_iterations=2), device)
    argv += ["--ngf", str(sizes["ngf"]), "--ndf", str(sizes["ngf"]), "--no-html"]
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=1", "--standalone",
                             "train_gan.py", *argv], cwd=ROOT, capture_output=True, text=True, timeout=600)
    backend = "nccl" if "nccl" in result.stdout else "gloo" if "gloo" in result.stdout else "none"
    return {"name": "torchrun --nproc_per_node 1", "ok": result.returncode == 0, "backend": backend,
            "total_s": time.perf_counter() - started,
            "error": None if result.returncode == 0 else result.stderr.strip()[-400:]}


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    gpu = args.device.startswith("cuda")
    sizes = _sizes(gpu)
    rows = step_rows(args.device, sizes)
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        rows += training_rows(args.device, sizes, Path(tmp))
        rows.append(torchrun_row(args.device, sizes, Path(tmp)))
    for row in rows:
        row.setdefault("device", args.device)
        row.setdefault("gpu", torch.cuda.get_device_name(0) if gpu else None)
    return rows
