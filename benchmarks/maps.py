"""Label-map rendering speed (common.posedata.maps): heatmaps + PAFs of two people per sample.

Rows: the numpy renderers the data loader uses, at NADS-Net's 96 x 96 stride-4 grid and at the
GAN's 384 x 384 stride-1 grid, and the batched torch renderers on the CPU (B = 1) at both; on a
machine with CUDA, the torch renderers on the GPU for a batch of 8 too. CPU rows run with one
torch thread (numpy's element-wise work is single-threaded anyway), so they show the cost per
data-loader worker. The seed rendered with per-cell Python loops, which these replace.

    python -m benchmarks.maps [--iters 50] [--json]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from typing import Callable

import numpy as np
import torch

from common.posedata.maps import render_heatmaps, render_heatmaps_torch, render_pafs, render_pafs_torch
from common.posedata.pose import HEATMAP_SIGMA, NUM_KEYPOINTS, OUTPUT_STRIDE, REFERENCE_IMAGE_SIZE

# Two seated people side by side, (x, y) in pixels of a 384 x 384 input, keypoint order of common.posedata.pose.
_TWO_PEOPLE = np.array(
    [
        [(60, 250), (72, 190), (100, 130), (135, 120), (170, 128), (190, 185), (175, 240), (115, 265), (155, 268)],
        [(230, 255), (240, 195), (262, 132), (298, 118), (335, 126), (352, 190), (340, 250), (280, 262), (318, 266)],
    ],
    dtype=np.float64,
)
assert _TWO_PEOPLE.shape[1] == NUM_KEYPOINTS


def _peak_memory_gb() -> float:
    """Peak resident memory of this process so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def _median_seconds(step: Callable[[], object], iters: int, synchronize: Callable[[], None] = lambda: None) -> float:
    for _ in range(max(2, iters // 10)):  # warm-up: allocator, caches, lazy initialisation
        step()
    synchronize()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        step()
        synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _row(name: str, seconds: float, samples: int) -> dict:
    return {
        "name": name,
        "median_s": seconds,
        "gflops": None,  # memory- and indexing-bound: FLOP counts say nothing useful here
        "gflops_per_s": None,
        "peak_memory_gb": _peak_memory_gb(),
        "ms_per_sample": seconds * 1000.0 / samples,
    }


def run(args: argparse.Namespace) -> list[dict]:
    """Measure the renderers; returns one row per configuration (see the module docstring)."""
    iters = int(args.iters)
    grids = ((REFERENCE_IMAGE_SIZE // OUTPUT_STRIDE, OUTPUT_STRIDE), (REFERENCE_IMAGE_SIZE, 1))
    rows = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for cells, stride in grids:
            label = f"{cells}x{cells} stride {stride}, 2 people, 9 heatmaps + 16 PAFs"

            def numpy_step(cells=cells, stride=stride):
                render_heatmaps(_TWO_PEOPLE, cells, cells, stride, HEATMAP_SIGMA)
                render_pafs(_TWO_PEOPLE, cells, cells, stride)

            rows.append(_row(f"maps numpy {label}, 1 thread", _median_seconds(numpy_step, iters), 1))

            keypoints = torch.from_numpy(_TWO_PEOPLE).float()[None]

            def torch_step(cells=cells, stride=stride, keypoints=keypoints):
                render_heatmaps_torch(keypoints, cells, cells, stride, HEATMAP_SIGMA)
                render_pafs_torch(keypoints, cells, cells, stride)

            rows.append(_row(f"maps torch cpu B=1 {label}, 1 thread", _median_seconds(torch_step, iters), 1))
    finally:
        torch.set_num_threads(threads)

    if torch.cuda.is_available():
        batch = 8
        for cells, stride in grids:
            keypoints = torch.from_numpy(_TWO_PEOPLE).float()[None].repeat(batch, 1, 1, 1).cuda()

            def cuda_step(cells=cells, stride=stride, keypoints=keypoints):
                render_heatmaps_torch(keypoints, cells, cells, stride, HEATMAP_SIGMA)
                render_pafs_torch(keypoints, cells, cells, stride)

            seconds = _median_seconds(cuda_step, iters, torch.cuda.synchronize)
            name = f"maps torch cuda B={batch} {cells}x{cells} stride {stride}, 2 people, 9 heatmaps + 16 PAFs"
            rows.append(_row(name, seconds, batch))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=50, help="timed repetitions per row (median reported)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    args = parser.parse_args(argv)
    rows = run(args)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    for row in rows:
        print(f"{row['ms_per_sample']:9.3f} ms/sample  {row['name']}")
    print(f"peak resident memory {rows[-1]['peak_memory_gb']:.2f} GB")


if __name__ == "__main__":
    main()
