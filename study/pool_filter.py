"""A pool of generated frames filtered by how well the guidance network reads their new poses.

    python -m study.pool_filter --pool DIR --source-set DIR --guidance FILE [--threshold 0.5] --out DIR

For every frame of a pool (a `generate.py dataset` folder), the guidance network (NADS-Net on
the training set: the GAN's own guide, never the judge) is evaluated on the elbows and wrists the
pool changed from its source frame (study.pools.changed_keypoint_masks): its PCKt@0.2 over them.
A frame whose score is below --threshold is dropped; a frame with no changed arm keypoint in
the frame to judge is kept (nothing says it failed). A source frame all of whose variants are
dropped keeps its one best-read variant: every real frame then still has a variant to be paired
with (common.posedata.dataset.WithGeneratedFrames), so the dose of generated frames per batch
stays the pool's. The kept frames go to --out in the same layout (Raw_Images, Seatbelt_Mask,
the annotation file, its records unchanged, with a "filter" entry beside "info") with
`filter.json`: the threshold, the counts and every frame's score. The folder appears whole or
not at all.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np

from common.models.factory import load_nadsnet
from common.posedata.dataset import PoseDataset, annotation_file_text, read_annotation_list
from common.posedata.pose import NUM_KEYPOINTS
from common.training.cli import OneLineParser, run_script
from common.training.files import write_text_atomic
from gan.generation.frames import copy_file
from nadsnet_pvt.metrics import ARM_KEYPOINTS, ValidationMetrics
from study.plan import DataSet, pool_annotations
from study.pools import changed_keypoint_masks, source_image_ids, subset_of
from study.report import dataset_of, evaluate_on

FILTER_PROG = "python -m study.pool_filter"
DEFAULT_THRESHOLD = 0.5  # PCKt@0.2 over a frame's changed arm keypoints
RECORD = "filter.json"


def _filter_options(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = OneLineParser(prog=FILTER_PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--pool", type=Path, required=True, help="the pool folder (generate.py dataset's --out)")
    parser.add_argument("--source-set", type=Path, required=True,
                        help="the synthetic training set the pool varies (its training annotation file)")
    parser.add_argument("--guidance", type=Path, required=True,
                        help="the guidance network's weights (never the judge's: it must stay unseen)")
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                        help="the lowest PCKt@0.2 over a frame's changed elbows and wrists that keeps it (a fraction)")
    parser.add_argument("--out", type=Path, required=True, help="the filtered pool's folder (written whole)")
    return parser.parse_args(argv), []


def changed_arm_scores(net, pool: PoseDataset, source: PoseDataset) -> np.ndarray:
    """float64 (N,): per pool frame, `net`'s PCKt@0.2 over the elbows and wrists that differ from
    its source frame's (NaN where none of them is evaluated: unchanged, or beyond the frame)."""
    arms = np.isin(np.arange(NUM_KEYPOINTS), ARM_KEYPOINTS)
    changed_arms = subset_of([mask & arms for mask in changed_keypoint_masks(pool, source)])
    scores = np.full(len(pool), math.nan)

    def score_frames(batch: dict, images, predictions) -> None:
        evaluated = changed_arms(batch)
        for row, index in enumerate(batch["index"].tolist()):  # one frame's metrics at a time
            frame = ValidationMetrics(pool.image_size)
            frame.update(predictions.heatmaps[row: row + 1], batch["keypoints"][row: row + 1],
                         evaluated=evaluated[row: row + 1])
            scores[index] = frame.summary()["pckt"]

    evaluate_on(net, pool, on_batch=score_frames)
    return scores


def kept_frames(scores: np.ndarray, sources: Sequence[str], threshold: float) -> np.ndarray:
    """bool (N,): the frames a filter at `threshold` keeps (see the module docstring); `sources`:
    each frame's source frame id."""
    keep = ~(scores < threshold)  # NaN: nothing to judge, kept
    frames_of: dict[str, list[int]] = {}
    for index, source in enumerate(sources):
        frames_of.setdefault(source, []).append(index)
    for frames in frames_of.values():
        if not keep[frames].any():
            keep[frames[int(np.argmax(scores[frames]))]] = True
    return keep


def write_filtered_pool(pool: PoseDataset, keep: np.ndarray, out: Path, record: dict) -> Path:
    """The kept frames of `pool` (files copied byte for byte, annotations as they are) in `out`,
    built beside it and renamed into place."""
    building = out.with_name(f".{out.name}.building")
    shutil.rmtree(building, ignore_errors=True)
    kept_ids = {image_id for image_id, kept in zip(pool.image_ids, keep) if kept}
    for index in np.flatnonzero(keep):
        for source, folder in ((pool.image_paths[index], "Raw_Images"), (pool.mask_paths[index], "Seatbelt_Mask")):
            target = building / folder / (pool.image_ids[index] + source.suffix)
            target.parent.mkdir(parents=True, exist_ok=True)
            copy_file(source, target)
    annotations = [annotation for annotation in read_annotation_list(pool.annotation_file)
                   if str(annotation.get("image_id", "")).replace("\\", "/").strip("/") in kept_ids]
    info = json.loads(pool.annotation_file.read_text(encoding="utf-8")).get("info", {})
    summary = {key: value for key, value in record.items() if key != "scores"}
    write_text_atomic(annotation_file_text(annotations, info=info, filter=summary), building / pool.annotation_file.name)
    write_text_atomic(json.dumps(record, indent=1) + "\n", building / RECORD)
    building.rename(out)
    return out


def filter_pool(options: argparse.Namespace, messages: Sequence[str] = ()) -> Path:
    """Score, filter and write (see the module docstring); a complete --out is left as it is."""
    if (options.out / RECORD).is_file():
        print(f"filtered pool already complete: {options.out}")
        return options.out
    net, _ = load_nadsnet(options.guidance)
    pool = dataset_of(pool_annotations(options.pool), net.image_size)
    source = dataset_of(DataSet(options.source_set).train_annotations, net.image_size)
    scores = changed_arm_scores(net, pool, source)
    keep = kept_frames(scores, source_image_ids(pool), options.threshold)
    record = {"pool": str(options.pool), "guidance": str(options.guidance), "threshold": options.threshold,
              "frames": len(pool), "kept": int(keep.sum()), "unjudged": int(np.isnan(scores).sum()),
              "kept_below_threshold": int((keep & (scores < options.threshold)).sum()),
              "scores": {image_id: None if math.isnan(score) else score for image_id, score in zip(pool.image_ids, scores)}}
    written = write_filtered_pool(pool, keep, options.out, record)
    print(f"filtered pool: {record['kept']} of {record['frames']} frames kept ({written})")
    return written


def filter_main(argv: Sequence[str] | None = None) -> int:
    """The command line (exit codes: common.training.cli)."""
    return run_script(FILTER_PROG, _filter_options, filter_pool, argv)


if __name__ == "__main__":
    raise SystemExit(filter_main())
