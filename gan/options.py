"""Command-line options of train_gan.py, grouped, with the seed's values as defaults.

Options that a preset sets default to None here and are filled from the preset; anything
given on the command line overrides its preset. `--preset seed` is the seed's configuration;
`--preset cpu` is small enough to train on a laptop CPU in minutes. With no GPU and no preset
given, the cpu preset is used (and the run says so). The options both training scripts have
are defined once, in common.training.options.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from common.errors import OptionError
from common.models.factory import build_discriminator, build_generator, discriminator_config, generator_config
from common.models.init import INIT_TYPES
from common.models.normalization import normalised_map_areas
from common.training.options import (
    IMAGE_SIZE_STEP,
    adam_beta,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    TrainingCommand,
)
from common.posedata.maps import OCCLUDED_JOINTS
from common.posedata.pose import SEMANTIC_CHANNELS
from common.presets import GAN_IMAGE_SIZE

# The seed's settings.
SEED_PRESET = dict(
    image_size=GAN_IMAGE_SIZE["seed"],
    ngf=64,
    ndf=64,
    spade_hidden=128,
    batch_size=1,
    niter=50,
    niter_decay=0,
    print_freq=1,
    display_freq=1,
    save_latest_freq=500,
    save_epoch_freq=10,
    lambda_l1=0.0,
    lr=0.0002,
    amp="off",
)

# A short CPU run (docs/training-gan.md): 64 px and narrow SPADE embeddings, since the full-resolution
# mlp_shared convolutions dominate the generator's cost. With no VGG weights and no trained NADS-Net on a fresh
# clone, hinge and feature matching alone leave streaks; the L1 term and the higher lr make figures appear early.
CPU_PRESET = dict(
    image_size=GAN_IMAGE_SIZE["cpu"],
    ngf=16,
    ndf=16,
    spade_hidden=32,
    batch_size=4,
    niter=2,
    niter_decay=0,
    print_freq=20,
    display_freq=50,
    save_latest_freq=100,
    save_epoch_freq=1,
    lambda_l1=100.0,
    lr=0.0005,
    amp="off",  # float32: bf16 is faster on CPUs that compute it natively, but its accuracy is not shown
                # equal yet (docs/performance.md); --amp auto or bf16 opts in
)

PRESETS = {"seed": SEED_PRESET, "cpu": CPU_PRESET}


def _add_loss_options(losses: argparse._ArgumentGroup) -> None:
    losses.add_argument("--gan-mode", choices=("hinge", "original", "ls", "w"), default="hinge")
    losses.add_argument("--lambda-feat", type=non_negative_float, default=10.0, help="feature matching")
    losses.add_argument("--lambda-vgg", type=non_negative_float, default=10.0, help="VGG19 perceptual loss")
    losses.add_argument("--lambda-l1", type=non_negative_float, default=None,
                        help="L1 between the fake and the real frame (pix2pix's reconstruction term; not in the "
                        "seed, which is 0)")
    losses.add_argument("--lambda-heatmap", type=non_negative_float, default=100.0, help="NADS-Net heatmap MSE")
    losses.add_argument("--lambda-paf", type=non_negative_float, default=100.0, help="NADS-Net PAF MSE")
    losses.add_argument("--lambda-seatbelt", type=non_negative_float, default=1.0, help="NADS-Net seatbelt Dice-BCE")
    losses.add_argument("--no-ganfeat-loss", action="store_true", help="turn feature matching off")
    losses.add_argument("--no-vgg-loss", action="store_true", help="turn the VGG loss off")
    losses.add_argument("--vgg-weights", default="auto",
                        help="torchvision VGG19 ImageNet weights: a file, or 'auto' = torch's cache "
                        "(<torch hub dir>/checkpoints/vgg19-dcbb9e9d.pth); without them the VGG term is off")
    losses.add_argument("--judge-weights", type=Path, default=None,
                        help="a NADS-Net trained on real frames only that never guided this generator: at every "
                        "saved epoch it judges the generator's pose faithfulness on held-out poses (gan_metrics.jsonl)")
    losses.add_argument("--judge-annotations", type=Path, default=None,
                        help="the held-out poses for --judge-weights (frames and masks from --valid-images-dir / "
                        "--valid-masks-dir); default: --valid-annotations")
    losses.add_argument("--nadsnet-weights", default="auto",
                        help="frozen NADS-Net for the guidance losses: a file (this project's or the seed's), "
                        "'auto' = <checkpoints-dir>/nadsnet_best.pth if it exists, or 'none'")


def _add_options(parser: argparse.ArgumentParser, groups: dict) -> None:
    groups["run"].add_argument("--which-epoch", default="latest",
                               help="with --continue-train and no training state: which saved G/D to start from")

    model = parser.add_argument_group("networks")
    model.add_argument("--ngf", type=positive_int, default=None, help="generator width")
    model.add_argument("--ndf", type=positive_int, default=None, help="discriminator width")
    model.add_argument("--num-upsampling-layers", choices=("normal", "more", "most"), default="normal")
    model.add_argument("--spade-hidden", type=positive_int, default=None,
                       help="channels of each SPADE layer's shared embedding")
    model.add_argument("--n-layers-d", type=positive_int, default=4, help="layers per PatchGAN")
    model.add_argument("--num-d", type=positive_int, default=2, help="discriminator scales")
    model.add_argument("--init-type", choices=INIT_TYPES, default="as-run",
                       help="as-run: as the seed actually ran (spectral-normed convs keep PyTorch's default init, "
                       "the others xavier normal); the others initialise every layer alike")
    model.add_argument("--init-gain", type=non_negative_float, default=0.02, help="gain of the xavier / normal init")
    model.add_argument("--occluded-joints", choices=OCCLUDED_JOINTS, default="drawn",
                       help="the joints labelled occluded (v = 1) in the generator's input: drawn like visible "
                       "ones (the seed's), or omitted, with the limbs touching them, from its heatmaps and PAFs; "
                       "kept in the generator's configuration, so generate.py and train_nadsnet.py render as it "
                       "was trained")
    model.add_argument("--checkpoint-generator", action="store_true",
                       help="recompute the generator's residual blocks in backward (saves memory, costs time)")

    _add_loss_options(parser.add_argument_group("losses"))

    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--lr", type=positive_float, default=None,
                       help="base learning rate (TTUR: G lr/2, D 2 lr)")
    optim.add_argument("--beta1", type=adam_beta, default=0.0, help="Adam beta1, with and without TTUR, as the seed")
    optim.add_argument("--beta2", type=adam_beta, default=0.9, help="Adam beta2, with and without TTUR, as the seed")
    optim.add_argument("--no-ttur", action="store_true", help="same lr for G and D (no two time-scale update rule)")
    optim.add_argument("--niter", type=non_negative_int, default=None, help="epochs at constant lr")
    optim.add_argument("--niter-decay", type=non_negative_int, default=None, help="epochs of linear decay to 0")
    optim.add_argument("--d-steps-per-g", type=positive_int, default=1, help="G steps on iterations where i %% this == 0")
    optim.add_argument("--reuse-fake", action="store_true",
                       help="D step uses the G step's fake (detached) instead of regenerating it")

    output = groups["output"]
    output.add_argument("--display-freq", type=non_negative_int, default=None,
                        help="save pictures every N iterations (0 = off)")
    output.add_argument("--save-epoch-freq", type=positive_int, default=None, help="save an epoch copy every N epochs")
    output.add_argument("--keep-epoch-checkpoints", type=positive_int, default=None,
                        help="keep only the N newest epoch copies (<epoch>_net_G/D.pth); default: all, as the seed")


# The options that set the shapes of the networks' weights (the image size does not: it only
# sets the generator's start grid), with the configuration key each one sets.
GENERATOR_SHAPE_FLAGS = {"ngf": "--ngf", "spade_hidden": "--spade-hidden", "num_upsampling_layers": "--num-upsampling-layers"}
DISCRIMINATOR_SHAPE_FLAGS = {"ndf": "--ndf", "n_layers": "--n-layers-d", "num_D": "--num-d"}


def fitting_flags(held: dict[str, Any], own: dict[str, Any], shape_flags: dict[str, str]) -> str:
    """For error hints: every flag of `shape_flags` {config key: flag} whose value in `held` (the
    file's configuration) differs from `own` (this run's), e.g. '--ngf 64 --spade-hidden 128';
    empty when none differs (then no flag can make the file fit)."""
    return " ".join(f"{flag} {held[key]}" for key, flag in shape_flags.items() if key in held and held[key] != own.get(key))


def check_sizes(options: argparse.Namespace) -> None:
    """Sizes the networks cannot work with, refused with what would work (OptionError).

    The limits are computed from the networks' shapes: the generator's start grid is the
    image size / 2^upsamplings; its batch norms need batch x smallest map > 1; the
    discriminator's instance norms need their smallest map > 1 value.
    """
    from common.models.generator import UPSAMPLINGS

    step = max(IMAGE_SIZE_STEP, 2 ** UPSAMPLINGS[options.num_upsampling_layers])
    if options.image_size % step:
        raise OptionError(f"--image-size {options.image_size}",
                          f"--num-upsampling-layers {options.num_upsampling_layers} needs a multiple of {step}")
    if options.num_upsampling_layers == "most" and options.ngf < 2:  # its last block halves ngf channels again
        raise OptionError(f"--ngf {options.ngf}", "--num-upsampling-layers most needs --ngf 2 or more")

    config = discriminator_config(options.ndf, options.n_layers_d, options.num_d)
    size = options.image_size
    areas = normalised_map_areas(lambda: build_discriminator(config), (SEMANTIC_CHANNELS + 3, size, size))
    if 0 < areas["instance_norm"] <= 1:  # (padding 2 keeps PatchGAN maps at 2 x 2 or more today)
        raise OptionError(f"--image-size {size}", "the discriminator's smallest normalised map is 1 x 1 at this size; "
                          "use a larger --image-size or fewer --n-layers-d / --num-d")
    smallest = smallest_generator_batch(options)
    if options.batch_size < smallest:
        raise OptionError(f"--batch-size {options.batch_size} with --image-size {options.image_size}",
                          f"the generator's batch norms see a 1 x 1 map per sample at this size, so a batch needs at "
                          f"least {smallest} samples (or use --image-size {2 * step})")


def smallest_generator_batch(options: argparse.Namespace) -> int:
    """The fewest samples the generator's batch norms can normalise in training mode
    (batch x smallest map > 1), computed from its shapes at --image-size."""
    config = generator_config(options.ngf, options.image_size, options.num_upsampling_layers, options.spade_hidden)
    area = normalised_map_areas(lambda: build_generator(config), (SEMANTIC_CHANNELS, options.image_size, options.image_size))
    return 1 if area["batch_norm"] != 1 else 2


def check_epochs(options: argparse.Namespace) -> None:
    if options.niter + options.niter_decay < 1:
        raise OptionError("--niter / --niter-decay", "at least one epoch in all is needed")


COMMAND = TrainingCommand(
    "train_gan.py",
    "Train the pose-conditioned SPADE generator (9 heatmaps + 16 PAFs + seatbelt -> frame), "
    "judged by a multi-scale PatchGAN and guided by a frozen NADS-Net.",
    PRESETS, _add_options, checks=(check_epochs, check_sizes))
build_parser = COMMAND.parser
parse_options = COMMAND.parse
