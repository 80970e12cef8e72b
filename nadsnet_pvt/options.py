"""Command-line options of train_nadsnet.py, grouped, with the seed's values as defaults.

Options that a preset sets default to None here and are filled from the preset; anything
given on the command line overrides its preset. `--preset seed` is the seed's configuration
(SPEC 9, 10); `--preset cpu` uses train_gan.py's cpu image size (so a generator trained with
`python train_gan.py --preset cpu` fits) and is small enough to finish in a few minutes on a
laptop CPU. With no GPU and no preset given, the cpu preset is used (and the run says so).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence


from common.interrupts import NONFINITE_STREAK_LIMIT
from common.options import add_data_paths, apply_preset, fraction, positive_int
from common.presets import PRESET_IMAGE_SIZE


# The seed's settings (SPEC 9, 10).
SEED_PRESET = dict(
    image_size=PRESET_IMAGE_SIZE["seed"],
    batch_size=4,
    epochs=100,
)

# A few minutes on a 2-core CPU on data_sample/ (24 training frames: 6 batches of 4 per epoch,
# about 5 s per epoch with the generated half). It shows the whole pipeline working; 120 SGD
# steps from random weights at 64 px teach NADS-Net little beyond the seatbelt mask's prior.
CPU_PRESET = dict(
    image_size=PRESET_IMAGE_SIZE["cpu"],
    batch_size=4,
    epochs=20,
)

PRESETS = {"seed": SEED_PRESET, "cpu": CPU_PRESET}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="train_nadsnet.py",
        description="Train NADS-Net (PVT-tiny backbone: keypoint heatmaps, PAFs, seatbelt mask). A fraction of "
        "every batch is replaced by frames the pretrained SPADE generator renders in randomly changed arm poses.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    run = parser.add_argument_group("run")
    run.add_argument("--preset", choices=sorted(PRESETS), default=None,
                     help="seed: the seed's configuration (384 px, batch 4, 100 epochs, lr 1e-5); "
                     "cpu: a small configuration for a CPU (train_gan.py's cpu image size). "
                     "Default: seed with a GPU, cpu without one.")
    run.add_argument("--seed", type=int, default=0, help="random seed (weights, data order, augmentation)")
    run.add_argument("--checkpoints-dir", type=Path, default=Path("checkpoints"),
                     help="where nadsnet_best.pth, the training state, TensorBoard logs and web/nadsnet.html go")
    run.add_argument("--continue-train", action="store_true",
                     help="continue exactly where the run in --checkpoints-dir stopped (nadsnet_train_state.pth)")
    run.add_argument("--pretrained", type=Path, default=None,
                     help="weights to start from: a NADS-Net state dict (the seed's or this project's) or "
                     "ImageNet PVT-tiny weights (backbone only); what does not load is reported")

    data = parser.add_argument_group("data")
    add_data_paths(data, validation=True)
    data.add_argument("--image-size", type=int, default=None, help="input size S (multiple of 32); seed: 384")
    data.add_argument("--batch-size", type=positive_int, default=None, help="seed: 4")
    data.add_argument("--num-workers", type=int, default=2, help="data loader processes")
    data.add_argument("--arm-augment", choices=("none", "slightly", "highly"), default="slightly",
                      help="how the generated samples' arm poses are changed (SPEC 5)")
    data.add_argument("--include-background", action="store_true",
                      help="a 10th heatmap channel: the background, 1 - max of the keypoint channels")

    gan = parser.add_argument_group("generated samples")
    gan.add_argument("--gan-fraction", type=fraction, default=0.5,
                     help="fraction of every batch rendered by the generator (the first samples); "
                     "0 = plain training, no generator needed")
    gan.add_argument("--generator-weights", default="auto",
                     help="the SPADE generator (configuration read from the .json beside it; seed files use "
                     "the seed's configuration); 'auto' = <checkpoints-dir>/latest_net_G.pth")
    gan.add_argument("--generator-eval", action="store_true",
                     help="run the generator in eval mode (stored running statistics) instead of normalising "
                     "with the generated samples' batch statistics, as the seed and the GAN training did")

    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--epochs", type=positive_int, default=None, help="seed: 100")
    optim.add_argument("--lr", type=float, default=1e-5, help="SGD learning rate")
    optim.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (no Nesterov)")
    optim.add_argument("--weight-decay", type=float, default=5e-7)
    optim.add_argument("--lr-schedule", choices=("metric-based", "fixed"), default="metric-based",
                       help="metric-based: ReduceLROnPlateau on the validation loss (factor 0.8, patience 4, "
                       "threshold 1e-4 relative); fixed: StepLR (step 20 epochs, gamma 0.8)")
    optim.add_argument("--on-nonfinite", choices=("stop", "skip"), default="stop",
                       help="a NaN/inf loss term: stop with a message naming the term and the iteration "
                       "(nothing is saved after it, so the last save stays intact), or skip that batch's update "
                       f"with a warning (the run stops after {NONFINITE_STREAK_LIMIT} skipped batches in a row)")

    device = parser.add_argument_group("devices and speed")
    device.add_argument("--gan-device", default=None, help="generator; default: cuda:0 with a GPU, else cpu")
    device.add_argument("--nadsnet-device", default=None,
                        help="NADS-Net; default: cuda:1 with two GPUs, the generator's device otherwise")
    device.add_argument("--amp", choices=("off", "bf16", "fp16"), default="off", help="mixed precision on GPUs")

    output = parser.add_argument_group("output")
    output.add_argument("--save-latest-freq", type=int, default=500,
                        help="also save the training state every N iterations (batches), mid-epoch included, "
                        "so --continue-train after a crash loses at most N iterations; 0: only after each epoch")
    output.add_argument("--print-freq", type=int, default=0,
                        help="also print the batch losses every N batches (0: only the progress bar and "
                        "the epoch summaries)")
    output.add_argument("--display-samples", type=int, default=4, help="validation samples shown per epoch on the page")
    output.add_argument("--no-html", action="store_true", help="do not write web/nadsnet.html")
    return parser


def parse_options(argv: Sequence[str] | None = None, gpu_available: bool | None = None) -> tuple[argparse.Namespace, list[str]]:
    options = build_parser().parse_args(argv)
    messages = apply_preset(options, PRESETS, gpu_available)
    return options, messages

