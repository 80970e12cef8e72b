"""Command-line options of train_nadsnet.py, grouped, with the seed's values as defaults.

Options that a preset sets default to None here and are filled from the preset; anything
given on the command line overrides its preset. `--preset seed` is the seed's configuration;
`--preset cpu` uses train_gan.py's cpu image size (so a generator trained with
`python train_gan.py --preset cpu` fits). With no GPU and no preset given, the cpu preset is
used (and the run says so). The options both training scripts have are defined once, in
common.training.options.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from common.errors import OptionError
from common.models.factory import SEED_NADSNET_CONFIG, non_seed_choices
from common.models.nadsnet import BACKBONES, FPN_WIRINGS
from common.training.options import (
    adam_beta,
    fraction,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    TrainingCommand,
)
from common.posedata.augment import ARM_AUGMENT_MODES
from common.posedata.pose import NUM_KEYPOINTS
from common.models.factory import LATEST_GENERATOR
from common.presets import NADSNET_IMAGE_SIZE
from nadsnet_pvt.batch import GENERATED_MODES

# The seed's settings.
SEED_PRESET = dict(
    image_size=NADSNET_IMAGE_SIZE["seed"],
    fpn_channels=256,
    head_channels=128,
    batch_size=4,
    epochs=100,
    optimizer="sgd",
    lr=1e-5,
    weight_decay=5e-7,
    seatbelt_weight=500.0,
    heatmap_weight=1.0,
    smallest_scale=0.3,
    gan_fraction=0.5,
    generated="replace",
    lr_schedule="metric-based",
    print_freq=100,  # the loss line, and the running losses on the progress bar
    save_latest_freq=500,
    amp="off",
)

# A short CPU run (docs/training-nadsnet.md): 128 px (PCKt needs the resolution), narrow FPN and heads (the heads
# dominate NADS-Net's cost), AdamW (the seed's SGD at lr 1e-5 is too slow for a short run) with heatmaps and
# seatbelt weighted to learn together, samples at full size (shrunk to 0.3, people cover only a few output cells).
# A quarter of each batch is generated, since the cpu preset's short-trained generator renders arms faintly; the
# cosine schedule ends on small steps, so the last epoch does not land on a noisy full-size step.
CPU_PRESET = dict(
    image_size=NADSNET_IMAGE_SIZE["cpu"],
    fpn_channels=64,
    head_channels=32,
    batch_size=4,
    epochs=10,
    optimizer="adamw",
    lr=1e-3,
    weight_decay=1e-2,
    seatbelt_weight=300.0,
    heatmap_weight=10.0,
    smallest_scale=1.0,
    gan_fraction=0.25,
    generated="replace",
    lr_schedule="cosine",
    print_freq=25,
    save_latest_freq=500,
    amp="off",  # float32: bf16 is faster on CPUs that compute it natively, but its accuracy is not shown
                # equal yet (docs/performance.md); --amp auto or bf16 opts in
)

PRESETS = {"seed": SEED_PRESET, "cpu": CPU_PRESET}


def _add_generated_sample_options(gan: argparse._ArgumentGroup) -> None:
    gan.add_argument("--gan-fraction", type=fraction, default=None,
                     help="fraction of every batch rendered by the generator (the first samples); "
                     "0 = plain training, no generator needed")
    gan.add_argument("--generator-weights", default="auto",
                     help="the SPADE generator (configuration read from the .json beside it; seed files use "
                     f"the seed's configuration); 'auto' = <checkpoints-dir>/{LATEST_GENERATOR}")
    gan.add_argument("--generated", choices=GENERATED_MODES, default=None,
                     help="replace: generated samples take the place of the first real samples of each batch (the "
                     "seed's recipe); add: they join the batch's real samples (B + round(B x --gan-fraction) in all)")
    gan.add_argument("--generated-frames", type=Path, default=None, metavar="ANNOTATIONS",
                     help="take the generated samples from frames rendered ahead of training instead of running the "
                     "generator at every step: the annotation file of a folder written by `generate.py dataset` (or "
                     "the synthetic renderer's oracle), with Raw_Images/ and Seatbelt_Mask/ beside it; each frame's "
                     "annotations name the training frame it varies (source_image_id), and the run's seed picks one "
                     "of a training frame's variants each time it is drawn")
    gan.add_argument("--generator-eval", action="store_true",
                     help="run the generator in eval mode (stored running statistics) instead of normalising "
                     "with the generated samples' batch statistics, as the seed and the GAN training did")


def _add_network_options(network: argparse._ArgumentGroup) -> None:
    network.add_argument("--backbone", choices=BACKBONES, default=SEED_NADSNET_CONFIG["backbone"],
                         help="pvt_tiny: the seed's PVT v1 tiny (position embeddings learned for --image-size; the "
                         "seed's checkpoints and the official ImageNet PVT-tiny weights load into it); pvt_v2_b0 .. "
                         "pvt_v2_b5: timm's PVT-v2, smallest to largest, in timm's layout (timm's or the official "
                         "ImageNet weights of the same variant load into it with --pretrained; predict and export can "
                         "run it at any multiple of 32)")
    network.add_argument("--fpn", choices=FPN_WIRINGS, default=SEED_NADSNET_CONFIG["fpn"],
                         help="seed: the seed's wiring (ReLU on the laterals, each level merged with the next coarser "
                         "lateral only, P4 without its output conv; the seed's checkpoints need it); standard: the "
                         "textbook FPN (Lin et al. 2017), levels merged top-down from P5")
    network.add_argument("--fpn-channels", type=positive_int, default=None, help="the FPN's width")
    network.add_argument("--head-channels", type=positive_int, default=None,
                         help="each pyramid level's width in the three heads (4x that fused)")


def _add_options(parser: argparse.ArgumentParser, groups: dict) -> None:
    groups["run"].add_argument("--pretrained", default=None,
                               help="weights to start from: a NADS-Net state dict (the seed's or this project's, of "
                               "the same --backbone and --fpn) or ImageNet weights of the --backbone (backbone only: "
                               "the official PVT-tiny release; timm's or the official PVT-v2 release); what does not "
                               "load is reported")
    data = groups["data"]
    data.add_argument("--arm-augment", choices=ARM_AUGMENT_MODES, default="slightly",
                      help="how the generated samples' arm poses are changed: slightly and highly are the seed's "
                      "(highly throws arms in any direction); plausible keeps joint angles within human limits, hands "
                      "in the frame and out of the head and torso; library draws arms from --arm-pose-library")
    data.add_argument("--arm-pose-library", type=Path, default=None, metavar="ANNOTATIONS",
                      help="for --arm-augment library: the annotation file whose front-row arms are drawn "
                      "(common/posedata/pose_library.py)")
    data.add_argument("--smallest-scale", type=_scale, default=None,
                      help="the geometric augmentation shrinks each sample to a scale from this to 1.0 per axis, "
                      "in steps of 0.1")
    data.add_argument("--include-background", action="store_true",
                      help="a 10th heatmap channel: the background, 1 - max of the keypoint channels")
    _add_network_options(parser.add_argument_group("network"))

    _add_generated_sample_options(parser.add_argument_group("generated samples"))

    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--epochs", type=positive_int, default=None)
    optim.add_argument("--optimizer", choices=("sgd", "adamw"), default=None)
    optim.add_argument("--lr", type=positive_float, default=None, help="learning rate")
    optim.add_argument("--momentum", type=adam_beta, default=0.9, help="SGD momentum (no Nesterov)")
    optim.add_argument("--weight-decay", type=non_negative_float, default=None)
    optim.add_argument("--seatbelt-weight", type=non_negative_float, default=None,
                       help="weight of the seatbelt Dice-BCE in the loss")
    optim.add_argument("--heatmap-weight", type=non_negative_float, default=None,
                       help="weight of the heatmap SSE / B in the loss")
    optim.add_argument("--lr-schedule", choices=("metric-based", "fixed", "cosine"), default=None,
                       help="metric-based: ReduceLROnPlateau on the validation loss (factor 0.8, patience 4, "
                       "threshold 1e-4 relative); fixed: StepLR (step 20 epochs, gamma 0.8); cosine: from --lr "
                       "down a half cosine, once per epoch, reaching 0 after --epochs (not in the seed)")

    groups["output"].add_argument("--display-samples", type=non_negative_int, default=4,
                                  help="validation samples shown per epoch on the page")
    groups["output"].add_argument("--train-eval-frames", type=non_negative_int, default=0,
                                  help="after every epoch, also the metrics on the first N training frames (as they "
                                  "are, unaugmented), written as train_frames_* beside the validation's: how far the "
                                  "network fits its own frames against the held-out ones; 0 = off")


def _scale(text: str) -> float:
    value = fraction(text)
    if value < 0.1 or abs(value * 10 - round(value * 10)) > 1e-9:
        raise argparse.ArgumentTypeError(f"expected one of 0.1, 0.2, ..., 1.0, got {text}")
    return value


def nadsnet_flags(config: dict[str, Any]) -> str:
    """The flags that build a NADS-Net of this configuration (for error hints); --backbone and
    --fpn where they are not the defaults."""
    background = " --include-background" if config.get("num_heatmaps") == NUM_KEYPOINTS + 1 else ""
    widths = f" --fpn-channels {config.get('fpn_channels', 256)} --head-channels {config.get('head_channels', 128)}"
    choices = "".join(f" --{key} {value}" for key, value in non_seed_choices(config).items())
    return f"--image-size {config['image_size']}{background}{widths}{choices}"


def check_generated_batch(options: argparse.Namespace) -> None:
    """The generator normalises each batch's generated samples with their batch statistics:
    the fewest generated in a batch must be enough for its batch norms (computed from its
    shapes at --image-size, as train_gan.py checks its batch)."""
    if options.gan_fraction == 0 or options.generator_eval or options.generated_frames is not None:
        return
    from common.models.factory import build_generator, generator_config
    from common.models.normalization import normalised_map_areas
    from common.posedata.pose import SEMANTIC_CHANNELS

    per_batch = options.batch_size * options.gan_fraction
    fewest = max(1, math.floor(per_batch + 1e-9))
    config = generator_config(1, options.image_size)
    area = normalised_map_areas(lambda: build_generator(config), (SEMANTIC_CHANNELS, options.image_size, options.image_size))
    if fewest * area["batch_norm"] <= 1:
        raise OptionError(f"--batch-size {options.batch_size} x --gan-fraction {options.gan_fraction:g}",
                          f"batches with a single generated sample, but the generator's batch norms see a 1 x 1 map at "
                          f"--image-size {options.image_size}: generate at least 2 per batch, use --generator-eval, "
                          "or a larger --image-size")


def check_pose_library(options: argparse.Namespace) -> None:
    if (options.arm_augment == "library") != (options.arm_pose_library is not None):
        raise OptionError("--arm-pose-library", "goes with --arm-augment library, and only with it")


COMMAND = TrainingCommand(
    "train_nadsnet.py",
    "Train NADS-Net (a PVT backbone and an FPN: keypoint heatmaps, PAFs, seatbelt mask). A fraction of "
    "every batch can be frames the pretrained SPADE generator renders in changed arm poses, in place of real "
    "samples (the seed's recipe) or added to them.",
    PRESETS, _add_options, checks=(check_generated_batch, check_pose_library))
build_parser = COMMAND.parser
parse_options = COMMAND.parse
