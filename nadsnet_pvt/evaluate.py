"""Evaluate NADS-Net: losses and metrics (nadsnet_pvt.metrics) over a data set.

`evaluate()` is the one implementation of evaluation: the training's validation after every
epoch and the command below both call it.

    python -m nadsnet_pvt.evaluate --weights checkpoints/nadsnet_best.pth \\
        --annotations DATA/Valid_keypoint_Annotation_sample.json \\
        --images-dir DATA/Raw_Images --masks-dir DATA/Seatbelt_Mask --json results.json

evaluates any NADS-Net weights file (this project's, with its JSON configuration beside it, or
the seed's plain state dict, whose image size is read off its position embeddings), prints the
overall numbers and the per-keypoint table, and writes them with --json as one JSON object
(NaN written as null). Exit status: 0 done; 1 unreadable weights or data (one line on stderr);
2 bad options.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn

from common.training.cli import OneLineParser, run_script
from common.posedata.dataset import PoseDataset, collate_poses
from common.parallel.devices import AMP_MODES, autocast_context, parse_device
from common.errors import OptionError
from common.training.files import write_text_atomic
from common.posedata.maps import nadsnet_targets
from common.models.factory import load_nadsnet
from common.models.losses import nadsnet_loss
from common.models.nadsnet import NADSNetOutput
from common.training.options import check_amp, image_size_value, non_negative_int, positive_int
from common.posedata.pose import NUM_KEYPOINTS
from nadsnet_pvt.metrics import COUNT_SIZE, ValidationMetrics, format_keypoint_table, format_overall
from nadsnet_pvt.run_files import RUN_HELP, fill_from_run

PROG = "python -m nadsnet_pvt.evaluate"
# --run DIR: each data flag from the run's validation options (older files may leave them unset)
RUN_DATA = {"annotations": ("valid_annotations",), "images_dir": ("valid_images_dir", "images_dir"),
            "masks_dir": ("valid_masks_dir", "masks_dir")}
# on_batch(batch, images on the device (B, 3, S, S), predictions (heatmaps, pafs, seatbelt or None))
BatchHook = Callable[[dict, torch.Tensor, tuple], None]
# reduce(counts) -> counts, or None after changing them in place (torch.distributed.all_reduce)
CountReduction = Callable[[torch.Tensor], "torch.Tensor | None"]
# subset(batch) -> bool (B, P, 9): the keypoints of a batch that a subset's metrics count
KeypointSubset = Callable[[dict], torch.Tensor]


@dataclass
class Evaluation:
    """What `evaluate` gives.

    losses: {'total', 'heatmap', 'paf'[, 'seatbelt', 'dice']} means over samples (see nadsnet_loss).
    summary: `ValidationMetrics.summary()` (after the reduction, when one was given).
    metrics: the accumulated ValidationMetrics (already reduced).
    samples: the number of samples the losses are averaged over (all processes' after a reduction).
    subsets: {name: summary} of the keypoint subsets asked for (see `evaluate`).
    """

    losses: dict[str, float]
    summary: dict
    metrics: ValidationMetrics
    samples: int
    subsets: dict[str, dict] = field(default_factory=dict)


def predict(net: nn.Module, images: torch.Tensor, device: torch.device, amp: str = "off") -> NADSNetOutput:
    """NADS-Net's outputs in float32 (forward under `amp` autocast): heatmaps (B, C, S/4, S/4),
    pafs (B, 16, S/4, S/4), seatbelt (B, 1, S, S) in [0, 1] or None without a seatbelt head."""
    with autocast_context(device, amp):
        out = NADSNetOutput(*net(images))
    return NADSNetOutput(*(None if value is None else value.float() for value in out))


@torch.no_grad()
def evaluate(
    net: nn.Module,
    batches: Iterable[dict],
    image_size: int,
    include_background: bool,
    device: torch.device | str,
    amp: str = "off",
    on_batch: BatchHook | None = None,
    reduce: CountReduction | None = None,
    subsets: dict[str, KeypointSubset] | None = None,
) -> Evaluation:
    """Losses and metrics of `net` over `batches`, in eval mode without autograd.

    batches: collated PoseDataset batches (common.posedata.dataset.collate_poses): "image" (B, 3, S, S)
        ImageNet-normalised, "seatbelt" (B, 1, S, S) in {0, 1}, "keypoints" (B, P, 9, 2) input
        pixels, NaN-padded, "image_id" list; S = image_size.
    include_background: render a 10th (background) heatmap target, as the network was built.
    amp: 'off' | 'bf16' | 'fp16' autocast of the forward pass (losses and metrics in float32).
    on_batch: called after each batch's forward pass, e.g. to draw pictures.
    reduce: applied once, after the last batch and before anything is read on the host, to one
        flat tensor of loss sums, then metric counts (e.g. an all-reduce over processes; every
        process must have seen at least one batch).
    subsets: {name: subset(batch) -> bool (B, P, 9)}: the same metrics over those keypoints
        only (from the same forward pass), in `Evaluation.subsets`.
    The network's train/eval mode is restored afterwards. Raises ValueError without batches.
    """
    device = torch.device(device)
    metrics = ValidationMetrics(image_size, device=device)
    subset_metrics = {name: ValidationMetrics(image_size, device=device) for name in subsets or {}}
    names: list[str] = []
    loss_sums: torch.Tensor | None = None
    was_training = net.training
    net.eval()
    try:
        for batch in batches:
            images = batch["image"].to(device, non_blocking=True)
            seatbelt = batch["seatbelt"].to(device, non_blocking=True)
            keypoints = batch["keypoints"].to(device, non_blocking=True)
            heatmaps, pafs = nadsnet_targets(keypoints, image_size, include_background)
            predictions = predict(net, images, device, amp)
            losses = nadsnet_loss(predictions.heatmaps, predictions.pafs, predictions.seatbelt, heatmaps, pafs, seatbelt)
            weighted = torch.stack(list(losses.values())).to(metrics.counts()) * images.shape[0]
            names, loss_sums = list(losses), weighted if loss_sums is None else loss_sums + weighted
            metrics.update(predictions.heatmaps, keypoints, predictions.seatbelt, seatbelt)
            for name, subset in (subsets or {}).items():
                subset_metrics[name].update(predictions.heatmaps, keypoints, predictions.seatbelt, seatbelt,
                                            evaluated=subset(batch))
            if on_batch is not None:
                on_batch(batch, images, predictions)
    finally:
        net.train(was_training)
    if loss_sums is None:
        raise ValueError("nothing to evaluate: no batches")
    return _finish(names, loss_sums, metrics, reduce, subset_metrics)


def _finish(names: list[str], loss_sums: torch.Tensor, metrics: ValidationMetrics, reduce: CountReduction | None,
            subset_metrics: dict[str, ValidationMetrics]) -> Evaluation:
    """Reduce (optionally) the loss sums and all metric counts together, then read them on the host."""
    every = [metrics, *subset_metrics.values()]
    counts = torch.cat([loss_sums, *(m.counts() for m in every)])
    if reduce is not None:
        reduced = reduce(counts)
        counts = counts if reduced is None else reduced
    offset = len(names)
    for accumulated in every:
        accumulated.load_counts(counts[offset: offset + COUNT_SIZE])
        offset += COUNT_SIZE
    summary = metrics.summary()
    samples = summary["images"]
    sums = counts[: len(names)].cpu().tolist()
    return Evaluation({name: total / samples for name, total in zip(names, sums)}, summary, metrics, samples,
                      {name: accumulated.summary() for name, accumulated in subset_metrics.items()})


# --------------------------------------------------------------------------- the command


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG,
        description="Evaluate NADS-Net weights (this project's or the seed's) on an annotated data set: "
        "losses, PCK@5/@10, PCKt@0.2, mean error, per-keypoint table, seatbelt IoU/Dice.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--weights", type=Path, default=None, help="NADS-Net weights (.pth, or a training state)")
    parser.add_argument("--run", type=Path, default=None, help=RUN_HELP + ", and its validation set in place of "
                        "--annotations, --images-dir and --masks-dir (each flag given wins)")
    parser.add_argument("--annotations", type=Path, default=None, help="annotation JSON in the seed's format")
    parser.add_argument("--images-dir", type=Path, default=None, help="folder of <image_id>.png frames")
    parser.add_argument("--masks-dir", type=Path, default=None, help="folder of <image_id>.png seatbelt masks")
    parser.add_argument("--image-size", type=image_size_value, default=None,
                        help="input size in pixels; default: the checkpoint's (it must match it)")
    parser.add_argument("--batch-size", type=positive_int, default=4)
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps; default: cuda when available")
    parser.add_argument("--amp", choices=AMP_MODES, default="off", help="mixed precision of the forward pass")
    parser.add_argument("--num-workers", type=non_negative_int, default=0, help="DataLoader worker processes")
    parser.add_argument("--json", type=Path, default=None, help="write the results to this JSON file")
    return parser


def _without_nan(value: Any) -> Any:
    """A copy of nested dicts/lists with non-finite floats replaced by None (JSON null)."""
    if isinstance(value, dict):
        return {key: _without_nan(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_without_nan(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def results_json(evaluation: Evaluation, args: argparse.Namespace, config: dict) -> str:
    """The JSON object --json writes: paths, sizes, losses, every summary number and the
    per-keypoint table; NaN as null."""
    record = {
        "weights": str(args.weights),
        "annotations": str(args.annotations),
        "images_dir": str(args.images_dir),
        "masks_dir": str(args.masks_dir),
        "image_size": int(config["image_size"]),
        "include_background": int(config["num_heatmaps"]) == NUM_KEYPOINTS + 1,
        "seatbelt_head": bool(config.get("seatbelt", True)),
        "samples": evaluation.samples,
        "losses": evaluation.losses,
        **evaluation.summary,
    }
    return json.dumps(_without_nan(record), indent=2, allow_nan=False) + "\n"


def format_report(evaluation: Evaluation, args: argparse.Namespace, config: dict) -> str:
    """The printed report: what was evaluated, losses, overall numbers, per-keypoint table."""
    summary = evaluation.summary
    losses = "  ".join(f"{name} {value:.4g}" for name, value in evaluation.losses.items())
    return "\n".join([
        f"NADS-Net {args.weights} ({config['image_size']} px) on {args.annotations}: "
        f"{summary['images']} images, {summary['people']} people",
        f"losses: {losses}",
        format_overall(summary),
        format_keypoint_table(summary),
    ])


def run(args: argparse.Namespace) -> Evaluation:
    """Load the weights and the data, evaluate, print, write --json. Raises CheckpointError,
    DataError, ValueError or OSError with a one-line message (common.training.cli.run_script reports it)."""
    device = torch.device(args.device)
    net, config = load_nadsnet(args.weights, device, image_size=args.image_size)
    image_size = int(config["image_size"])
    dataset = PoseDataset(args.annotations, args.images_dir, args.masks_dir, image_size=image_size)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=args.batch_size, shuffle=False, num_workers=args.num_workers,
        collate_fn=collate_poses, pin_memory=device.type == "cuda",
    )
    include_background = int(config["num_heatmaps"]) == NUM_KEYPOINTS + 1
    evaluation = evaluate(net, loader, image_size, include_background, device, amp=args.amp)
    print(format_report(evaluation, args, config))
    if args.json is not None:
        write_text_atomic(results_json(evaluation, args, config), args.json)
        print(f"wrote {args.json}")
    return evaluation


def parse_options(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    """The options (device resolved: --device, else cuda when available, else cpu) and no messages.
    Raises SystemExit(2) or OptionError on a bad option."""
    args = fill_from_run(build_parser().parse_args(argv), RUN_DATA)
    try:
        args.device = str(parse_device(args.device)) if args.device else ("cuda" if torch.cuda.is_available() else "cpu")
    except ValueError as error:
        raise OptionError("--device", str(error)) from None
    check_amp(args.amp, [torch.device(args.device).type])
    return args, []


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: 0 done, 1 unreadable weights or data, 2 bad options (one line on stderr)."""
    return run_script(PROG, parse_options, lambda args, _messages: run(args), argv)


if __name__ == "__main__":
    sys.exit(main())
