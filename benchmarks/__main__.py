"""`python -m benchmarks <name> [<name> ...] [options]`: speed and memory of the training code.

Names: gan-iteration, nadsnet-step, data, maps, page, gpu-check (see benchmarks/README.md). Each prints a table,
or with --json one JSON line per measurement with at least the keys name, median_s, gflops,
gflops_per_s and peak_memory_gb (null where a FLOP count means nothing: data, maps).
For clean memory figures run one benchmark per process (one name per command).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any, Callable

import torch

from benchmarks.options import build_parser
from common.parallel.devices import amp_problem

PRESET_BENCHMARKS = ("gan-iteration", "nadsnet-step")  # configured by --preset
DEFAULT_SIZE = 384  # --size of the others


def _runner(name: str) -> Callable[[argparse.Namespace], list[dict[str, Any]]]:
    if name == "gan-iteration":
        from benchmarks.gan_iteration import run
    elif name == "nadsnet-step":
        from benchmarks.nadsnet_step import run
    elif name == "data":
        from benchmarks.data import run
    elif name == "page":
        from benchmarks.page import run
    elif name == "gpu-check":
        from benchmarks.gpu_check import run
    else:
        from benchmarks.maps import run
    return run


def check_arguments(args: argparse.Namespace) -> str | None:
    """A message when the combination cannot run, else None."""
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        return f"--device {args.device}: no CUDA GPU is available"
    problem = amp_problem(args.amp, [torch.device(args.device).type])
    if problem:
        return f"--amp {args.amp}: {problem}"
    if args.size is not None and (args.size <= 0 or args.size % 32):
        return f"--size must be a positive multiple of 32, got {args.size}"
    return None


def format_row(row: dict[str, Any]) -> str:
    def value(key: str, unit: str, digits: int) -> str:
        v = row.get(key)
        return f"{v:.{digits}f} {unit}" if isinstance(v, (int, float)) and not math.isnan(v) else "-"

    parts = [
        f"{row['name']}:",
        value("median_s", "s", 3),
        value("gflops", "GFLOP", 1),
        value("gflops_per_s", "GFLOP/s", 1),
        value("peak_memory_gb", "GB peak", 2),
    ]
    if "samples_per_s" in row:
        parts.append(value("samples_per_s", "samples/s", 1))
    return "  ".join(parts)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.device is None:
        args.device = "cuda" if "gpu-check" in args.names and torch.cuda.is_available() else "cpu"
    problem = check_arguments(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    for name in args.names:
        options = argparse.Namespace(**vars(args))
        if name not in PRESET_BENCHMARKS:
            options.size = options.size or DEFAULT_SIZE
            options.batch = options.batch or 1
        if name == "maps" and options.iters is None:
            options.iters = 50
        rows = _runner(name)(options)
        for row in rows:
            row.setdefault("benchmark", name)
            print(json.dumps(row) if args.json else format_row(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
