"""One GAN training iteration (G step + D step), as train_gan.py runs it.

The model is built by `gan.train.build_model` from options parsed by `gan.options`
(`--preset seed|cpu` with the size, widths, --amp, --reuse-fake, --checkpoint-generator given
here), so the networks, their freezing and the loss terms are exactly the training script's.
`--preset seed` (default): every loss on: hinge GAN loss, discriminator feature matching, VGG19
perceptual loss with random weights (`--vgg-weights random`) and the NADS-Net guidance with a
random NADS-Net at the same size (written to a temporary file and loaded as `--nadsnet-weights`
would be). `--preset cpu`: the quick start's iteration (64 px, ngf / ndf 16, SPADE hidden 32,
batch 4, hinge, feature matching and L1; no VGG weights and no NADS-Net, as on a fresh clone). The trainer is
`gan.trainer.GANTrainer` with the options' settings (the same optimisers as a training run).

One iteration = `model.prepare_batch` (label maps rendered on the GAN's device from a
synthetic batch: two seated people, a seatbelt band, random images in [-1, 1]) +
`trainer.generator_step` + `trainer.discriminator_step`, the body of gan/train.py's loop.
With --lean-memory, as in a training run with that option, glibc's allocator is first told to
return freed blocks of 1 MiB and more to the OS (`common.parallel.devices.tune_allocator_for`). The warm-up iteration is FLOP-counted per step (`gflops_generator_step`,
`gflops_discriminator_step`).
"""

from __future__ import annotations

import argparse
import functools
import tempfile
from pathlib import Path
from typing import Any

import torch

from benchmarks.harness import (
    PeakMemory,
    StderrLog,
    count_flops,
    measurement_row,
    profile_precision,
    quiet_stdout,
    synchronize,
    synthetic_batch,
    time_iterations,
)
from common.training.checkpoints import save_network
from common.parallel.devices import Placement, resolve_devices, tune_allocator_for
from common.models.factory import SEED_NADSNET_CONFIG, build_nadsnet
from gan.options import PRESETS, parse_options
from gan.train import build_model
from gan.trainer import GANTrainer


def write_random_nadsnet(directory: Path, image_size: int, seed: int = 0) -> Path:
    """A randomly initialised NADS-Net (PVT-tiny, seed FPN, seatbelt head) saved as the
    training script would load it."""
    config = dict(SEED_NADSNET_CONFIG, image_size=image_size)
    torch.manual_seed(seed)
    path = directory / "nadsnet_random.pth"
    save_network(build_nadsnet(config), path, config)
    return path


def training_options(args: argparse.Namespace, directory: Path) -> argparse.Namespace:
    """train_gan.py's options for this benchmark configuration: `--preset` (seed: every loss
    on, with random VGG and NADS-Net weights; cpu: the quick start's terms, which has neither)
    with --size, --ngf, --ndf and --batch where given."""
    preset = PRESETS[args.preset]
    size = args.size or preset["image_size"]
    ndf = args.ndf or args.ngf
    argv = [
        "--preset", args.preset,
        "--image-size", str(size),
        *(["--ngf", str(args.ngf)] if args.ngf else []),
        *(["--ndf", str(ndf)] if ndf else []),
        *(["--batch-size", str(args.batch)] if args.batch else []),
        "--checkpoints-dir", str(directory),
        "--gan-device", args.device,
        "--nadsnet-device", args.device,
        "--amp", args.amp,
    ]
    if args.preset == "seed":
        argv += ["--vgg-weights", "random", "--nadsnet-weights", str(write_random_nadsnet(directory, size))]
    else:
        argv += ["--no-vgg-loss", "--nadsnet-weights", "none"]
    if args.reuse_fake:
        argv.append("--reuse-fake")
    if args.checkpoint_generator:
        argv.append("--checkpoint-generator")
    if args.lean_memory:
        argv.append("--lean-memory")
    options, _ = parse_options(argv, gpu_available=torch.cuda.is_available())
    return options


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    iters = args.iters if args.iters is not None else 2
    with tempfile.TemporaryDirectory(prefix="gan_iteration_") as tmp, quiet_stdout():
        options = training_options(args, Path(tmp))
        gan_device, nadsnet_device = resolve_devices(options.gan_device, options.nadsnet_device)
        allocator_tuned = tune_allocator_for(options.lean_memory, gan_device)  # as gan.train.train does
        if gan_device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # as gan/train.py
        model, _ = build_model(options, Placement(gan_device, nadsnet_device), StderrLog())
        terms = model.active_terms()
        if args.preset == "seed" and not all(terms.values()):
            raise RuntimeError(f"a loss term is off: {terms}")
        trainer = GANTrainer.from_options(options, model)
        model.train()
        batch = synthetic_batch(options.batch_size, options.image_size)
        if gan_device.type == "cuda":
            batch = {k: v.pin_memory() if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

        def generator_half() -> tuple[torch.Tensor, torch.Tensor]:
            semantics, real = model.prepare_batch(batch)
            trainer.generator_step(semantics, real)
            return semantics, real

        def iteration() -> None:
            semantics, real = generator_half()
            trainer.discriminator_step(semantics, real, reuse_fake=options.reuse_fake)

        # Warm-up iteration, FLOP-counted step by step.
        (semantics, real), generator_flops = count_flops(generator_half)
        _, discriminator_flops = count_flops(
            functools.partial(trainer.discriminator_step, semantics, real, reuse_fake=options.reuse_fake)
        )
        del semantics, real
        synchronize(gan_device)
        with PeakMemory(gan_device) as memory:
            times = time_iterations(iteration, iters, gan_device)
        profile = profile_precision(iteration) if args.profile else None

    name = "gan-iteration" + (f" preset {args.preset}" if args.preset != "seed" else "") + (" reuse-fake" if options.reuse_fake else "") + (
        " checkpoint-generator" if options.checkpoint_generator else ""
    ) + (f" amp {options.amp}" if options.amp != "off" else "") + (" lean-memory" if options.lean_memory else "")
    row = measurement_row(
        name,
        times,
        generator_flops + discriminator_flops,
        memory,
        gflops_generator_step=generator_flops / 1e9,
        gflops_discriminator_step=discriminator_flops / 1e9,
        device=str(gan_device),
        size=options.image_size,
        ngf=options.ngf,
        ndf=options.ndf,
        batch=options.batch_size,
        amp=options.amp,
        preset=args.preset,
        spade_hidden=options.spade_hidden,
        reuse_fake=bool(options.reuse_fake),
        checkpoint_generator=bool(options.checkpoint_generator),
        losses=sorted(name for name, on in terms.items() if on),
        freed_memory_returned_to_os=allocator_tuned,
    )
    if profile is not None:
        row["profile"] = profile
    return [row]
