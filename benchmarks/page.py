"""The GAN page's cost per display step, at the start of a run and after `--steps` of them.

One display step = what gan/train.py does when `--display-freq` falls due, at the seed's
frequencies (print and display every iteration): the losses recorded for the curves
(`GANVisualizer.record_losses`) and `GANVisualizer.display` (three 384 px PNGs of one sample,
the bounded gallery, old pictures deleted, the page rewritten, the loss plot redrawn when its
interval has passed). The pictures are random, so PNG encoding costs what real frames cost or
more. Epochs of `--steps-per-epoch` steps exercise the per-epoch entries and archive pages.
Reports first_write_s / last_write_s (median of the first and last 20 steps), mean_step_s,
the files left in web/images and the saved state's size: all of them must stay flat.
"""

from __future__ import annotations

import argparse
import pickle
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from gan.visualizer import GANVisualizer

WINDOW = 20


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    steps = args.steps
    size = args.size
    generator = torch.Generator().manual_seed(0)
    semantics = torch.rand(26, size, size, generator=generator)
    fake = torch.rand(3, size, size, generator=generator) * 2 - 1
    real = torch.rand(3, size, size, generator=generator) * 2 - 1
    seconds: list[float] = []
    with tempfile.TemporaryDirectory(prefix="page_") as tmp:
        visualizer = GANVisualizer(Path(tmp) / "web")
        for step in range(1, steps + 1):
            epoch = 1 + (step - 1) // args.steps_per_epoch
            losses = {"GAN": 1.0 / step, "GAN_Feat": 10.0, "VGG": 5.0, "D_Fake": 0.5, "D_real": 0.5}
            started = time.perf_counter()
            visualizer.record_losses(step, losses)
            visualizer.display(epoch, step, semantics, fake, real)
            seconds.append(time.perf_counter() - started)
        images = len(list((Path(tmp) / "web" / "images").iterdir()))
        state_bytes = len(pickle.dumps(visualizer.state_dict()))
    first = statistics.median(seconds[:WINDOW])
    last = statistics.median(seconds[-WINDOW:])
    return [{
        "name": "page", "steps": steps, "size": size, "steps_per_epoch": args.steps_per_epoch,
        "first_write_s": first, "last_write_s": last, "last_over_first": last / first,
        "mean_step_s": statistics.fmean(seconds), "max_step_s": max(seconds),
        "images_left": images, "state_bytes": state_bytes,
        "median_s": statistics.median(seconds), "gflops": None, "gflops_per_s": None, "peak_memory_gb": None,
    }]
