"""The files of a NADS-Net run folder, and what `--run DIR` takes from one.

A run folder holds `nadsnet_best.pth` (+ `.json`) once an epoch has ended, the training state
`nadsnet_train_state.pth` from its first save on (the weights it was saved with, so a run
stopped inside its first epoch still leaves weights), and `nadsnet_opt.txt`, the run's resolved
options. evaluate, predict and export accept `--run DIR` in place of `--weights` (and evaluate
in place of its data flags: the run's validation set).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Mapping

from common.errors import OptionError
from common.training.options import read_config
from nadsnet_pvt.options import build_parser

BEST_WEIGHTS = "nadsnet_best.pth"
STATE_FILE = "nadsnet_train_state.pth"
OPTIONS_FILE = "nadsnet_opt.txt"
LOG_FILE = "nadsnet_log.txt"
METRICS_FILE = "nadsnet_metrics.jsonl"

RUN_HELP = ("a NADS-Net run folder: its nadsnet_best.pth (else the weights in its training state) "
            "in place of --weights")


def run_weights(run_dir: Path) -> Path:
    """The weights a run folder offers: its best (lowest validation loss), else its training
    state's (a run stopped before its first epoch ended). OptionError when it holds neither."""
    for name in (BEST_WEIGHTS, STATE_FILE):
        if (run_dir / name).is_file():
            return run_dir / name
    if not run_dir.is_dir():
        raise OptionError(f"--run {run_dir}", "is not a folder")
    raise OptionError(f"--run {run_dir}", f"holds neither {BEST_WEIGHTS} nor {STATE_FILE}: not a NADS-Net run "
                      "folder, or one that never saved (pass --weights FILE)")


def run_options(run_dir: Path) -> dict[str, Any]:
    """The run's recorded options {dest: value} (its nadsnet_opt.txt, read as --config reads it)."""
    path = run_dir / OPTIONS_FILE
    if not path.is_file():
        raise OptionError(f"--run {run_dir}", f"has no {OPTIONS_FILE} (pass the data flags yourself)")
    return read_config(path, build_parser())


def fill_from_run(args: argparse.Namespace, data_flags: Mapping[str, tuple[str, ...]] | None = None) -> argparse.Namespace:
    """`args` with --weights taken from --run DIR where not given, and each `data_flags` {dest:
    the run's options to take it from, the first one set} left unset taken from the run's options. OptionError when neither --weights
    nor --run is given, or a needed flag is in neither."""
    data_flags = data_flags or {}
    run_dir = getattr(args, "run", None)
    if run_dir is None:
        if args.weights is None:
            raise OptionError("--weights", "give the weights file, or --run DIR (a NADS-Net run folder)")
        missing = [dest for dest in data_flags if getattr(args, dest) is None]
        if missing:
            raise OptionError("--" + missing[0].replace("_", "-"), "is required (or give --run DIR to take the run's)")
        return args
    if args.weights is None:
        args.weights = run_weights(run_dir)
    wanted = [dest for dest in data_flags if getattr(args, dest) is None]
    if wanted:
        recorded = run_options(run_dir)
        for dest in wanted:
            value = next((recorded[name] for name in data_flags[dest] if recorded.get(name) is not None), None)
            if value is None:
                raise OptionError("--" + dest.replace("_", "-"), f"is required: {run_dir / OPTIONS_FILE} records no "
                                  f"{' or '.join(data_flags[dest])}")
            setattr(args, dest, Path(value))
    return args
