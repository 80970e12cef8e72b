"""Command-line plumbing both training scripts share: argument types, the data-path options,
preset handling and the options file (`opt.txt`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Mapping

import torch

DATA_DIR = Path("data_sample")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def fraction(text: str) -> float:
    """argparse type: a number in [0, 1]."""
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {value}")
    return value


def add_data_paths(group: argparse._ArgumentGroup, validation: bool = False) -> None:
    """--train-annotations (--valid-annotations), --images-dir, --masks-dir: data_sample/ by default,
    in the seed's layout."""
    group.add_argument("--train-annotations", type=Path, default=DATA_DIR / "Train_keypoint_Annotation_sample.json")
    if validation:
        group.add_argument("--valid-annotations", type=Path, default=DATA_DIR / "Valid_keypoint_Annotation_sample.json")
    group.add_argument("--images-dir", type=Path, default=DATA_DIR / "Raw_Images")
    group.add_argument("--masks-dir", type=Path, default=DATA_DIR / "Seatbelt_Mask")


def apply_preset(
    options: argparse.Namespace, presets: Mapping[str, Mapping[str, Any]], gpu_available: bool | None = None
) -> list[str]:
    """Fill the options left unset (None) from `presets[options.preset]`; returns messages for the log.

    Without `--preset`, 'seed' is used with a GPU and 'cpu' without one (and a message says so).
    """
    if gpu_available is None:
        gpu_available = torch.cuda.is_available()
    messages = []
    if options.preset is None:
        options.preset = "seed" if gpu_available else "cpu"
        if options.preset == "cpu":
            messages.append("no GPU found and no --preset given: using --preset cpu "
                            "(small and fast; pass --preset seed for the seed's configuration)")
    for key, value in presets[options.preset].items():
        if getattr(options, key) is None:
            setattr(options, key, value)
    return messages


def format_options(options: argparse.Namespace) -> str:
    """The options as text, one per line (NVlabs SPADE's opt.txt layout)."""
    lines = ["----------------- Options ---------------"]
    for key, value in sorted(vars(options).items()):
        lines.append(f"{key:>24}: {value}")
    lines.append("----------------- End -------------------")
    return "\n".join(lines) + "\n"
