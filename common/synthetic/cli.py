"""Command line of `python -m common.synthetic` (kept out of __main__.py so that the package
can re-export `main` without runpy warning about a module imported twice)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Sequence

from common.synthetic.arms import ARM_POSE_FAMILIES, ARM_POSE_RULES, parse_arm_poses
from common.synthetic.files import write_dataset
from common.synthetic.layout import DEFAULT_HEIGHT, DEFAULT_WIDTH

DESCRIPTION = """\
Procedural in-vehicle camera frames in the seed's data layout and annotation format.

Writes OUT/Raw_Images/<split>/frame_NNNNNN.png, OUT/Seatbelt_Mask/<same>.png and the two
annotation files; frame i of a split is drawn from np.random.default_rng([seed, split, i])
(split 0 train with --seed, 1 valid with --valid-seed), so the same arguments give the same
files and a frame does not depend on how many frames are written."""


def _arm_pose_list(text: str) -> frozenset[str]:
    """argparse type: 'wheel,lap' -> the checked family set; one-line error otherwise."""
    try:
        return parse_arm_poses(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def build_parser() -> argparse.ArgumentParser:
    """The command's options; --arm-poses values arrive as checked frozensets (None = all)."""
    families = ",".join(ARM_POSE_FAMILIES)
    parser = argparse.ArgumentParser(prog="python -m common.synthetic", description=DESCRIPTION,
                                     epilog=ARM_POSE_RULES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="output folder (created)")
    parser.add_argument("--train", type=int, required=True, help="number of training frames")
    parser.add_argument("--valid", type=int, required=True, help="number of validation frames")
    parser.add_argument("--seed", type=int, default=0, help="random seed (>= 0); same seed -> same files")
    parser.add_argument("--valid-seed", type=int, default=None, metavar="SEED",
                        help="the validation split's own seed, for a held-out set of new people and cabins "
                             "(default: --seed, the validation frames of earlier versions)")
    parser.add_argument("--width", type=int, default=DEFAULT_WIDTH, help="frame width in pixels")
    parser.add_argument("--height", type=int, default=DEFAULT_HEIGHT, help="frame height in pixels")
    parser.add_argument("--arm-poses", type=_arm_pose_list, default=None, metavar="FAMILY[,FAMILY...]",
                        help=f"arm-pose families people may draw, from {families} (default: all; rules below)")
    parser.add_argument("--valid-arm-poses", type=_arm_pose_list, default=None, metavar="FAMILY[,FAMILY...]",
                        help="the validation split's families (default: those of --arm-poses)")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Parse `argv` (default: sys.argv[1:]), write the data set and print one summary line."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.train < 0 or args.valid < 0 or args.width < 64 or args.height < 64:
        parser.error("--train/--valid must be >= 0 and --width/--height >= 64")
    if args.seed < 0 or (args.valid_seed is not None and args.valid_seed < 0):
        parser.error("--seed/--valid-seed must be >= 0")
    start = time.perf_counter()
    stats = write_dataset(args.out, args.train, args.valid, args.seed, args.width, args.height,
                          arm_poses=args.arm_poses, valid_seed=args.valid_seed, valid_arm_poses=args.valid_arm_poses)
    poses = ", ".join(f"{family} {count}" for family, count in stats["arm_poses"].items() if count)
    print(f"wrote {stats['frames']} frames ({stats['people']} people, {stats['back_row']} in the back row, "
          f"{stats['grey']} grey, {stats['single_channel']} single-channel; arm poses: {poses or 'none'}) "
          f"to {args.out} in {time.perf_counter() - start:.1f} s")
