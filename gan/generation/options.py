"""generate.py's command line: two commands, `dataset` and `poses`, and the checks that refuse
what cannot work before anything is written (OptionError: one line, exit code 2)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

import torch

from common.posedata.augment import ARM_AUGMENT_MODES
from common.posedata.maps import OCCLUDED_JOINTS
from common.training.cli import OneLineParser
from common.parallel.devices import AMP_MODES, parse_device
from common.errors import OptionError
from common.training.options import check_amp, positive_int, seed_value

PROG = "generate.py"
DEFAULT_BATCH_SIZE = 4


def frame_size_value(text: str) -> tuple[int, int]:
    """argparse type: 'WIDTHxHEIGHT' in pixels, e.g. '640x360' -> (640, 360)."""
    parts = text.lower().split("x")
    try:
        width, height = (int(part) for part in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT in pixels, e.g. 640x360, got {text!r}") from None
    if width < 1 or height < 1:
        raise argparse.ArgumentTypeError(f"expected a width and height >= 1, got {text}")
    return width, height


def _add_shared(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--generator", type=Path, required=True,
                        help="generator weights (latest_net_G.pth with its .json, or a seed file); sets the size S")
    parser.add_argument("--annotations", type=Path, required=True, help="annotation JSON in the seed's format")
    parser.add_argument("--out", type=Path, required=True,
                        help="output folder: created, or this command's unfinished output (continued)")
    parser.add_argument("--overwrite", action="store_true",
                        help="empty a non-empty --out that is not this command's unfinished output, and start afresh")
    parser.add_argument("--occluded-joints", choices=OCCLUDED_JOINTS, default=None,
                        help="the joints labelled occluded (v = 1) in the generator's input: drawn, or omitted with "
                        "the limbs touching them; default: as the generator was trained (its configuration; drawn "
                        "for a file without the entry)")
    speed = parser.add_argument_group("devices and speed")
    speed.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda when available, else cpu)")
    speed.add_argument("--batch-size", type=positive_int, default=DEFAULT_BATCH_SIZE,
                       help=f"frames per generator pass (default {DEFAULT_BATCH_SIZE}); the files do not depend on it "
                       "unless --batch-statistics")
    speed.add_argument("--amp", choices=AMP_MODES, default="off",
                       help="autocast precision: off = float32; bf16 on a GPU or a CPU; fp16 on CUDA only")
    speed.add_argument("--batch-statistics", action="store_true",
                       help="normalise with each batch's statistics, as the generator did while training (frames "
                       "then depend on the other frames of their batch); default: eval mode, stored statistics")


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog=PROG, description="Render in-car frames from poses with a trained SPADE generator.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{dataset,poses}")
    dataset = commands.add_parser(
        "dataset", help="a pose-augmented copy of a data set, in the seed's layout",
        description="For every frame of a data set, --copies frames rendered in arm-augmented poses (front-row "
        "people only), written with their masks and annotations as a data set train_nadsnet.py reads.")
    _add_shared(dataset)
    dataset.add_argument("--images-dir", type=Path, required=True, help="the source frames (Raw_Images)")
    dataset.add_argument("--masks-dir", type=Path, required=True, help="the source seatbelt masks (Seatbelt_Mask)")
    dataset.add_argument("--arm-augment", choices=ARM_AUGMENT_MODES, default="slightly",
                         help="how the arms of front-row people change (default: slightly, the seed's)")
    dataset.add_argument("--arm-pose-library", type=Path, default=None, metavar="ANNOTATIONS",
                         help="for --arm-augment library: the annotation file whose front-row arms are drawn "
                         "(common/posedata/pose_library.py)")
    dataset.add_argument("--copies", type=positive_int, default=1, help="generated frames per source frame")
    dataset.add_argument("--seed", type=seed_value, default=0, help="seed of the arm augmentation")
    dataset.add_argument("--include-source", action="store_true",
                         help="also copy the source frames, masks and annotations in (a complete training set)")

    poses = commands.add_parser(
        "poses", help="frames in the poses of an annotation file, as they are",
        description="Render the poses of an annotation file; frames take the size of the source images, "
        "else --frame-size.")
    _add_shared(poses)
    poses.add_argument("--images-dir", type=Path, default=None, help="source frames: their sizes, and the contact sheet")
    belt = poses.add_mutually_exclusive_group()
    belt.add_argument("--masks-dir", type=Path, default=None, help="the belt channel from these seatbelt masks")
    belt.add_argument("--belt", choices=("empty", "from-keypoints"), default="empty",
                      help="without masks: no belt (default), or a band from the right shoulder to the left hip")
    poses.add_argument("--frame-size", type=frame_size_value, default=None,
                       help="WIDTHxHEIGHT of frames without source files (default: the generator's S x S)")
    return parser


def resolve_device(name: str | None) -> torch.device:
    """--device, or cuda when there is a GPU, else the CPU (OptionError for a device that does not exist)."""
    if not name:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return parse_device(name)
    except ValueError as error:
        raise OptionError(f"--device {name}", str(error)) from None


def parse_options(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    """Parse and refuse the combinations that cannot work (OptionError)."""
    options = build_parser().parse_args(argv)
    if options.command == "poses" and options.frame_size is not None and (options.images_dir or options.masks_dir):
        given = "--images-dir" if options.images_dir else "--masks-dir"
        raise OptionError(f"--frame-size {options.frame_size[0]}x{options.frame_size[1]}",
                          f"frames take the size of the files in {given}; leave --frame-size out")
    options.device = resolve_device(options.device)
    check_amp(options.amp, [options.device.type])
    return options, []
