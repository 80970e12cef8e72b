"""Command-line options of train_gan.py, grouped, with the seed's values as defaults.

Options that a preset sets default to None here and are filled from the preset; anything
given on the command line overrides its preset. `--preset seed` is the seed's configuration;
`--preset cpu` is small enough to train on a laptop CPU in about ten minutes. With no GPU and
no preset given, the cpu preset is used (and the run says so).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence


from common.interrupts import NONFINITE_STREAK_LIMIT
from common.options import add_data_paths, apply_preset, positive_int
from common.presets import PRESET_IMAGE_SIZE


# The seed's settings (SPEC 8, 9, 11).
SEED_PRESET = dict(
    image_size=PRESET_IMAGE_SIZE["seed"],
    ngf=64,
    ndf=64,
    batch_size=1,
    niter=50,
    niter_decay=0,
    print_freq=1,
    display_freq=1,
    save_latest_freq=500,
    save_epoch_freq=10,
)

# Small enough to finish in a few minutes on a 2-core CPU on data_sample/ (25 epochs of 6
# batches, about 5 s each), big enough that the synthesized frames visibly show figures in the
# conditioned poses by the end (they do from about epoch 10 on). Longer is not better here: by
# epoch 50-70 on 24 frames the discriminator wins and the frames fill with grid artefacts. The generator's cost at this size is
# dominated by SPADE's 128-channel mlp_shared convolutions at full resolution, whatever ngf is.
CPU_PRESET = dict(
    image_size=PRESET_IMAGE_SIZE["cpu"],
    ngf=16,
    ndf=16,
    batch_size=4,
    niter=20,
    niter_decay=5,
    print_freq=12,
    display_freq=24,
    save_latest_freq=60,
    save_epoch_freq=5,
)

PRESETS = {"seed": SEED_PRESET, "cpu": CPU_PRESET}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="train_gan.py",
        description="Train the pose-conditioned SPADE generator (9 heatmaps + 16 PAFs + seatbelt -> frame), "
        "judged by a multi-scale PatchGAN and guided by a frozen NADS-Net.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    run = parser.add_argument_group("run")
    run.add_argument("--preset", choices=sorted(PRESETS), default=None,
                     help="seed: the seed's configuration (384 px, ngf 64, 50 epochs, batch 1); "
                     "cpu: a small configuration for a CPU. Default: seed with a GPU, cpu without one.")
    run.add_argument("--seed", type=int, default=0, help="random seed (weights, data order)")
    run.add_argument("--checkpoints-dir", type=Path, default=Path("checkpoints"),
                     help="where weights, logs and the web page go")
    run.add_argument("--continue-train", action="store_true",
                     help="continue from the training state (or the seed's latest_net_G/D.pth) in --checkpoints-dir")
    run.add_argument("--max-iterations", type=positive_int, default=None,
                     help="stop after this many iterations in all, saving the state (continue later with --continue-train)")
    run.add_argument("--which-epoch", default="latest",
                     help="with --continue-train and no training state: which saved G/D to start from")

    data = parser.add_argument_group("data")
    add_data_paths(data)
    data.add_argument("--image-size", type=int, default=None, help="input size S (multiple of 32); seed: 384")
    data.add_argument("--batch-size", type=positive_int, default=None, help="seed: 1")
    data.add_argument("--num-workers", type=int, default=2, help="data loader processes")
    data.add_argument("--image-range", choices=("converted", "seed"), default="converted",
                      help="converted: [-1, 1] images are converted to ImageNet normalisation before NADS-Net "
                      "and VGG see them; seed: fed unconverted, as the seed did (to match its numbers)")

    model = parser.add_argument_group("networks")
    model.add_argument("--ngf", type=int, default=None, help="generator width; seed: 64")
    model.add_argument("--ndf", type=int, default=None, help="discriminator width; seed: 64")
    model.add_argument("--num-upsampling-layers", choices=("normal", "more", "most"), default="normal")
    model.add_argument("--n-layers-d", type=int, default=4, help="layers per PatchGAN")
    model.add_argument("--num-d", type=int, default=2, help="discriminator scales")
    model.add_argument("--init-gain", type=float, default=0.02, help="xavier-normal gain of G and D")
    model.add_argument("--checkpoint-generator", action="store_true",
                       help="recompute the generator's residual blocks in backward (saves memory, costs time)")

    losses = parser.add_argument_group("losses")
    losses.add_argument("--gan-mode", choices=("hinge", "original", "ls", "w"), default="hinge")
    losses.add_argument("--lambda-feat", type=float, default=10.0, help="feature matching")
    losses.add_argument("--lambda-vgg", type=float, default=10.0, help="VGG19 perceptual loss")
    losses.add_argument("--lambda-heatmap", type=float, default=100.0, help="NADS-Net heatmap MSE")
    losses.add_argument("--lambda-paf", type=float, default=100.0, help="NADS-Net PAF MSE")
    losses.add_argument("--lambda-seatbelt", type=float, default=1.0, help="NADS-Net seatbelt Dice-BCE")
    losses.add_argument("--no-ganfeat-loss", action="store_true", help="turn feature matching off")
    losses.add_argument("--no-vgg-loss", action="store_true", help="turn the VGG loss off")
    losses.add_argument("--vgg-weights", default="auto",
                        help="torchvision VGG19 ImageNet weights: a file, or 'auto' = torch's cache "
                        "(<torch hub dir>/checkpoints/vgg19-dcbb9e9d.pth); without them the VGG term is off")
    losses.add_argument("--nadsnet-weights", default="auto",
                        help="frozen NADS-Net for the guidance losses: a file (this project's or the seed's), "
                        "'auto' = <checkpoints-dir>/nadsnet_best.pth if it exists, or 'none'")

    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--lr", type=float, default=0.0002, help="base learning rate (TTUR: G lr/2, D 2 lr)")
    optim.add_argument("--beta1", type=float, default=0.0)
    optim.add_argument("--beta2", type=float, default=0.9)
    optim.add_argument("--no-ttur", action="store_true", help="same lr for G and D (no two time-scale update rule)")
    optim.add_argument("--niter", type=int, default=None, help="epochs at constant lr; seed: 50")
    optim.add_argument("--niter-decay", type=int, default=None, help="epochs of linear decay to 0; seed: 0")
    optim.add_argument("--d-steps-per-g", type=positive_int, default=1, help="G steps on iterations where i %% this == 0")
    optim.add_argument("--reuse-fake", action="store_true",
                       help="D step uses the G step's fake (detached) instead of regenerating it")
    optim.add_argument("--on-nonfinite", choices=("stop", "skip"), default="stop",
                       help="a NaN/inf loss term: stop with a message naming the term and the iteration "
                       "(nothing is saved after it, so the last checkpoint stays intact), or skip that "
                       f"batch's update with a warning (the run stops after {NONFINITE_STREAK_LIMIT} skipped "
                       "batches in a row)")

    device = parser.add_argument_group("devices and speed")
    device.add_argument("--gan-device", default=None, help="default: cuda:0 with a GPU, else cpu")
    device.add_argument("--nadsnet-device", default=None, help="default: cuda:1 with two GPUs, the GAN's device otherwise")
    device.add_argument("--amp", choices=("off", "bf16", "fp16"), default="off", help="mixed precision on GPUs")

    output = parser.add_argument_group("output")
    output.add_argument("--print-freq", type=positive_int, default=None, help="print losses every N iterations; seed: 1")
    output.add_argument("--display-freq", type=positive_int, default=None, help="save pictures every N iterations; seed: 1")
    output.add_argument("--save-latest-freq", type=positive_int, default=None, help="save 'latest' every N iterations; seed: 500")
    output.add_argument("--save-epoch-freq", type=positive_int, default=None, help="save an epoch copy every N epochs; seed: 10")
    output.add_argument("--no-html", action="store_true", help="do not write web/index.html")
    return parser


def parse_options(argv: Sequence[str] | None = None, gpu_available: bool | None = None) -> tuple[argparse.Namespace, list[str]]:
    options = build_parser().parse_args(argv)
    messages = apply_preset(options, PRESETS, gpu_available)
    return options, messages
