"""The options every benchmark reads (`python -m benchmarks --help`), apart from the command
so that a benchmark can build its defaults without importing the command."""

from __future__ import annotations

import argparse

from common.parallel.devices import AMP_MODES

BENCHMARKS = ("gan-iteration", "nadsnet-step", "data", "maps", "page", "gpu-check")
DESCRIPTION = "speed and memory of the training code"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=DESCRIPTION)
    parser.add_argument("names", nargs="+", choices=BENCHMARKS, metavar="name", help=" | ".join(BENCHMARKS))
    parser.add_argument("--preset", choices=("seed", "cpu"), default="seed",
                        help="gan-iteration, nadsnet-step: the training scripts' preset whose configuration they run "
                        "(seed: 384 px, the seed's widths, every loss on; cpu: the quick start's sizes, widths, "
                        "optimiser and loss terms); the flags below override it")
    parser.add_argument("--size", type=int, default=None,
                        help="image size S (multiple of 32; default: the preset's, 384 for the others)")
    parser.add_argument("--ngf", type=int, default=None, help="generator width (default: the preset's)")
    parser.add_argument("--ndf", type=int, default=None, help="discriminator width (default: --ngf, else the preset's)")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default: the preset's; data, page 1)")
    parser.add_argument("--iters", type=int, default=None,
                        help="timed repetitions, median reported (default: gan-iteration 2, nadsnet-step 2, data 3 passes, maps 50)")
    parser.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: cpu; gpu-check: cuda when there is one)")
    parser.add_argument("--amp", choices=AMP_MODES, default="off",
                        help="autocast precision: bf16 on a GPU or a CPU, fp16 on CUDA only (it needs loss scaling)")
    parser.add_argument("--profile", action="store_true",
                        help="gan-iteration, nadsnet-step: one more repetition timed operation by operation, reported "
                        "as 'profile' (seconds by input precision, the slowest operations)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="data: loader worker counts")
    parser.add_argument("--data", default="data_sample", help="data: dataset directory in the seed's layout")
    parser.add_argument("--gan-fraction", type=float, default=None,
                        help="nadsnet-step: share of each batch generated (default: the preset's: seed 0.5, cpu 0.25)")
    parser.add_argument("--reuse-fake", action="store_true", help="gan-iteration: D step reuses the G step's fake")
    parser.add_argument("--lean-memory", action="store_true", help="gan-iteration: as train_gan.py --lean-memory")
    parser.add_argument("--checkpoint-generator", action="store_true",
                        help="gan-iteration: activation checkpointing of the generator's blocks")
    parser.add_argument("--steps", type=int, default=5000, help="page: display steps")
    parser.add_argument("--steps-per-epoch", type=int, default=500, help="page: display steps per epoch")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--json", action="store_true", help="one JSON line per measurement")
    return parser
