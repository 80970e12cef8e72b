"""Data-loader throughput: samples per second of train_gan.py's loader with N workers.

The loader is `common.posedata.dataset.make_loader`, the training scripts' (PoseDataset + collate_poses + ResumableSampler, pinned
memory on CUDA, prefetching workers) over the training split of --data (default data_sample/:
24 synthetic 640 x 360 frames in the seed's format), decoded, resized to --size and normalised
by `common.posedata.dataset.PoseDataset`. One repetition = one full pass over the loader, as one epoch
of training makes it (the workers are started anew every epoch there too, so their start-up
is included). Rows, per worker count:
- median_s: median over the passes of (pass seconds / samples), i.e. seconds per sample;
- samples_per_s: 1 / median_s;
- steady_samples_per_s: samples after the first batch / seconds after it (start-up excluded).
Peak memory is the main process's only (workers are separate processes).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.harness import PeakMemory, measurement_row
from common.posedata.dataset import PoseDataset, make_loader
from common.posedata.sampling import ResumableSampler

TRAIN_ANNOTATIONS = "Train_keypoint_Annotation_sample.json"


def one_pass(loader, sampler: ResumableSampler, epoch: int) -> tuple[float, int, float, int]:
    """(seconds for the pass, its samples, seconds after the first batch, samples after it)."""
    sampler.set_epoch(epoch)
    start = time.perf_counter()
    first = None
    samples = 0
    for batch in loader:
        samples += batch["image"].shape[0]
        if first is None:
            first = time.perf_counter()
            first_samples = samples
    end = time.perf_counter()
    return end - start, samples, end - first, samples - first_samples


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    passes = args.iters if args.iters is not None else 3
    data = Path(args.data)
    annotations = data / TRAIN_ANNOTATIONS
    if not annotations.is_file():
        raise FileNotFoundError(
            f"{annotations} not found: pass --data DIR (a dataset in the seed's layout), or make one with "
            "`python -m common.synthetic --out DIR --train 24 --valid 8`"
        )
    dataset = PoseDataset(annotations, data / "Raw_Images", data / "Seatbelt_Mask", image_size=args.size)
    device = torch.device(args.device)
    rows = []
    for workers in args.workers:
        sampler = ResumableSampler(len(dataset), args.batch, seed=0, shuffle=True, drop_last=True)
        loader = make_loader(dataset, sampler, workers, device)
        one_pass(loader, sampler, 0)  # warm-up: file cache, imports in the workers
        with PeakMemory(torch.device("cpu")) as memory:
            results = [one_pass(loader, sampler, epoch) for epoch in range(1, passes + 1)]
        per_sample = [seconds / samples for seconds, samples, _, _ in results]
        steady = [samples / seconds for _, _, seconds, samples in results if seconds > 0 and samples > 0]
        median = statistics.median(per_sample)
        row = measurement_row(
            f"data workers={workers}",
            per_sample,
            None,
            memory,
            samples_per_s=1.0 / median,
            steady_samples_per_s=statistics.median(steady) if steady else None,
            workers=workers,
            size=args.size,
            batch=args.batch,
            samples_per_pass=results[0][1],
            dataset=str(data),
        )
        row["median_s"] = median
        rows.append(row)
    return rows
