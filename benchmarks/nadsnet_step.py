"""One NADS-Net training step as train_nadsnet.py runs it, generated half included.

One step = `nadsnet_pvt.batch.build_training_batch` (the first `generated_count(B, fraction)`
samples re-rendered by a SPADE generator through `GeneratedSamples` -- batch statistics, no
autograd, stored statistics untouched --, the label maps rendered on NADS-Net's device, the
geometric augmentation with `geometric_generator(seed, epoch, batch)`) + `NADSNetTrainer.train_step`
(forward, loss, backward, SGD). Networks: NADS-Net (PVT-tiny, seed FPN, seatbelt head) built
with `common.models.factory.build_nadsnet` and a SPADE generator of width --ngf, both with
random weights. Input: a synthetic collated batch (random images, a seatbelt band, two seated
people). `--gan-fraction 0` measures plain training (the seed's reference: ~24 s at batch 4).
"""

from __future__ import annotations

import argparse
import itertools
from typing import Any

import torch

from benchmarks.harness import PeakMemory, count_flops, measurement_row, synchronize, synthetic_batch, time_iterations
from common.devices import resolve_devices
from common.models.factory import SEED_NADSNET_CONFIG, build_generator, build_nadsnet, generator_config
from common.models.init import init_weights
from common.rendering import GeneratedSamples
from nadsnet_pvt.batch import build_training_batch, generated_count, geometric_generator
from nadsnet_pvt.trainer import NADSNetTrainer


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    iters = args.iters if args.iters is not None else 2
    device, _ = resolve_devices(args.device, args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    net = build_nadsnet(dict(SEED_NADSNET_CONFIG, image_size=args.size)).to(device)
    trainer = NADSNetTrainer(net, device, amp=args.amp)
    generated_samples = None
    if args.gan_fraction > 0:
        generator = build_generator(generator_config(args.ngf, args.size))
        init_weights(generator)
        generated_samples = GeneratedSamples(generator, device, "converted", eval_mode=False, amp=args.amp)
    batch = synthetic_batch(args.batch, args.size)
    if device.type == "cuda":
        batch = {k: v.pin_memory() if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    batch_indices = itertools.count()

    def step() -> None:
        # Batch indices 0, 1, 2, ... as in an epoch: with B * fraction not whole, the generated
        # count alternates exactly as in training.
        index = next(batch_indices)
        training_batch = build_training_batch(
            batch,
            generated_count(args.batch, args.gan_fraction, index),
            generated_samples,
            device,
            include_background=False,
            augment_generator=geometric_generator(0, 1, index),
        )
        trainer.train_step(training_batch)

    _, flops = count_flops(step)
    synchronize(device)
    with PeakMemory(device) as memory:
        times = time_iterations(step, iters, device)
    name = f"nadsnet-step gan-fraction {args.gan_fraction:g}" + (f" amp {args.amp}" if args.amp != "off" else "")
    return [
        measurement_row(
            name,
            times,
            flops,
            memory,
            device=str(device),
            size=args.size,
            batch=args.batch,
            ngf=args.ngf if args.gan_fraction > 0 else None,
            gan_fraction=args.gan_fraction,
            amp=args.amp,
        )
    ]
