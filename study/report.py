"""The study's results: every condition's final NADS-Net on the held-out sets, the judge's
faithfulness of the GAN against the oracle, real-only's overfitting curve, the paired
statistics and the verdict, written as `study.json` and `study.html`. The evaluation of final
networks on a list of sets (`results_on_sets`) and the tables serve the exploration stage too."""

from __future__ import annotations

import json
import math
import platform
from pathlib import Path
from statistics import fmean
from typing import Any, Callable

import cv2
import numpy as np
import torch

from common.training.checkpoints import load_file
from common.posedata.dataset import PoseDataset, make_loader
from common.training.files import write_text_atomic
from common.models.factory import build_nadsnet
from common.training.run_folder import provenance
from common.posedata.sampling import ResumableSampler
from common.posedata.visualize import PageSection, draw_skeleton, plot_curves, save_png, write_page
from nadsnet_pvt.evaluate import BatchHook, evaluate
from nadsnet_pvt.run_files import METRICS_FILE, STATE_FILE
from study.plan import BASELINE, NARROW_FAMILIES, DataSet, StudyData, Training, pool_annotations
from study.pools import changed_keypoint_masks, new_pose_arm_masks, subset_of
from study.verdict import METRICS, PRIMARY_METRIC, RULE, oracle_share, paired_table, summary

EVALUATION_BATCH = 8


def final_network(training: Training) -> torch.nn.Module:
    """The NADS-Net a training ended with (its last state: the comparison uses the final weights,
    not a checkpoint chosen on a held-out set)."""
    parts = load_file(training.directory / STATE_FILE, "training state")["parts"]
    net = build_nadsnet(parts["nadsnet_config"])
    net.load_state_dict(parts["nadsnet"])
    return net


def dataset_of(annotations: Path, image_size: int) -> PoseDataset:
    """The frames of an annotation file in the seed's layout (Raw_Images and Seatbelt_Mask beside
    it) at `image_size`."""
    return PoseDataset(annotations, annotations.parent / "Raw_Images", annotations.parent / "Seatbelt_Mask",
                       image_size=image_size)


def evaluate_on(net: torch.nn.Module, dataset: PoseDataset, subsets: dict | None = None,
                on_batch: BatchHook | None = None) -> dict[str, dict]:
    """{'all': metrics, subset name: metrics} of `net` on `dataset` (one forward pass per batch,
    `on_batch` called after each: nadsnet_pvt.evaluate); metrics: the REPORTED numbers of
    nadsnet_pvt.metrics."""
    sampler = ResumableSampler(len(dataset), EVALUATION_BATCH, shuffle=False, drop_last=False, even=False)
    sampler.set_epoch(0)
    evaluation = evaluate(net, make_loader(dataset, sampler, 0, torch.device("cpu")), dataset.image_size, False, "cpu",
                          on_batch=on_batch, subsets=subsets)
    pick = lambda summary_: {metric: summary_[metric] for metric in METRICS}  # noqa: E731
    return {"all": pick(evaluation.summary), **{name: pick(s) for name, s in evaluation.subsets.items()},
            "present": {"all": evaluation.summary["present_arms"],
                        **{name: s["present_arms"] for name, s in evaluation.subsets.items()}}}


def condition_results(trainings: list[Training], data: StudyData) -> tuple[dict[str, dict], dict]:
    """({condition: {'seeds': [...], 'wide'|'new_pose_arms'|'narrow': {metric: [one per seed]}}},
    the number of arm keypoints each held-out set evaluates)."""

    def held_out_sets(image_size: int) -> dict[str, tuple]:
        wide = dataset_of(data.wide.annotations, image_size)
        return {"wide": (wide, {"new_pose_arms": subset_of(new_pose_arm_masks(wide, NARROW_FAMILIES))}),
                "narrow": (dataset_of(data.narrow.annotations, image_size), {})}

    return results_on_sets(trainings, held_out_sets)


# An evaluation plan: image size -> {set name: (data set at that size, {subset name: subset})}
EvaluationSets = Callable[[int], dict[str, tuple[PoseDataset, dict]]]


def results_on_sets(trainings: list[Training], sets_at: EvaluationSets) -> tuple[dict[str, dict], dict]:
    """Every condition's final NADS-Nets on the sets `sets_at` gives at their input size (built
    once per size): ({condition: {'seeds': [...], set or subset name: {metric: [one per seed]}}},
    {'<set>_arms': arm keypoints evaluated, '<subset>': its keypoints, '<set>_frames': frames})."""
    results: dict[str, dict] = {}
    built: dict[int, dict] = {}
    counts: dict = {}
    for training in trainings:
        if training.condition is None:
            continue
        net = final_network(training)
        if net.image_size not in built:
            built[net.image_size] = sets_at(net.image_size)
        sets = built[net.image_size]
        entry = results.setdefault(training.condition, {"seeds": []})
        entry["seeds"].append(training.seed)
        for name, (dataset, subsets) in sets.items():
            measured = evaluate_on(net, dataset, subsets)
            for part, key in ((name, "all"), *((subset, subset) for subset in subsets)):
                values = entry.setdefault(part, {metric: [] for metric in METRICS})
                for metric in METRICS:
                    values[metric].append(measured[key][metric])
                counts[f"{name}_arms" if key == "all" else key] = measured["present"][key]
            counts[f"{name}_frames"] = len(dataset)
    return results, counts


def faithfulness(judge: Training, train: DataSet, pools_dir: Path) -> dict[str, Any]:
    """The judge's PCKt@0.2 (all, arms, seatbelt IoU) on the GAN's frames of the changed training
    poses over the same on the oracle's frames of the same poses, and how often a changed
    (generated) arm keypoint is found where its label says, in both."""
    net = final_network(judge)
    source = dataset_of(train.train_annotations, net.image_size)
    measured = {}
    for name in ("gan", "oracle"):
        pool = dataset_of(pool_annotations(pools_dir / name), net.image_size)
        measured[name] = evaluate_on(net, pool, {"changed": subset_of(changed_keypoint_masks(pool, source))})
    gan, oracle = measured["gan"], measured["oracle"]

    def ratio(metric: str, subset: str = "all") -> float:
        low = oracle[subset][metric]
        return gan[subset][metric] / low if low and math.isfinite(low) else math.nan

    return {"pckt": ratio("pckt"), "pckt_arms": ratio("pckt_arms"), "seatbelt_iou": ratio("seatbelt_iou"),
            "changed_arms_found": {"gan": gan["changed"]["pckt"], "oracle": oracle["changed"]["pckt"]},
            "gan": gan["all"], "oracle": oracle["all"], "changed_keypoints": gan["present"]["changed"]}


def overfitting(trainings: list[Training]) -> dict[str, list]:
    """Real-only seed 1, per epoch: PCKt@0.2 on its own training frames and on the wide held-out set."""
    run = next((t for t in trainings if t.condition == BASELINE and t.seed == 1), None)
    if run is None:
        return {"epoch": [], "train_pckt": [], "wide_pckt": [], "train_pckt_arms": [], "wide_pckt_arms": []}
    records = [json.loads(line) for line in (run.directory / METRICS_FILE).read_text().splitlines()
               if line.strip()]
    return {"epoch": [r["epoch"] for r in records], "train_pckt": [r.get("train_frames_pckt") for r in records],
            "wide_pckt": [r["pckt"] for r in records], "train_pckt_arms": [r.get("train_frames_pckt_arms") for r in records],
            "wide_pckt_arms": [r["pckt_arms"] for r in records]}


def versions() -> dict[str, str]:
    import timm
    import torchvision

    return {**provenance(), "torchvision": str(torchvision.__version__), "timm": timm.__version__,
            "opencv": cv2.__version__, "numpy": np.__version__, "platform": platform.platform()}


def build_report(results: dict, counts: dict, judged: dict, curve: dict, config: dict, minutes: float) -> dict:
    """What study.json holds."""
    table = paired_table(results)
    return {"conditions": results, "paired": table, "oracle_share": oracle_share(table),
            "verdict": {"rule": RULE, "primary": PRIMARY_METRIC, "summary": summary(table)},
            "overfitting": curve, "faithfulness": judged, "evaluated_keypoints": counts,
            "config": config, "versions": versions(), "minutes": minutes}


def write_report(out: Path, report: dict, pictures: list) -> None:
    write_json(report, out / "study.json")
    _write_page(out, report, pictures)


def write_json(report: dict, path: Path) -> None:
    """`report` as indented JSON, NaN as null, atomically."""
    write_text_atomic(json.dumps(_without_nan(report), indent=2) + "\n", path)


def plain(value: Any) -> Any:
    """A JSON-able copy of nested dicts, lists and tuples (paths and other objects as text)."""
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)


def _without_nan(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _without_nan(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_without_nan(item) for item in value]
    return value


# The main page's columns: (set or subset, metric) - PCKt@0.2 of all keypoints; of the arms for new-pose arms.
STUDY_COLUMNS = (("wide", "pckt"), ("new_pose_arms", "pckt_arms"), ("narrow", "pckt"))


def table_rows(conditions: dict, paired: dict, columns: tuple[tuple[str, str], ...] = STUDY_COLUMNS) -> list[str]:
    """Per condition (`conditions`: as study.json's) and column (set or subset, metric): the mean
    over seeds and the paired difference of `paired` ({condition: {'<set>.<metric>': ...}}, to
    the baseline it was computed against) with its 95 % interval."""
    rows = []
    for name, results in conditions.items():
        cells = []
        for held, metric in columns:
            values = [v for v in results[held][metric] if v is not None and math.isfinite(v)]
            mean = f"{fmean(values):.3f}" if values else "n/a"
            pair = paired.get(name, {}).get(f"{held}.{metric}")
            cells.append(mean if pair is None else f"{mean} {_difference(pair)}")
        rows.append(f"{name:<20} n={len(results['seeds'])} | " + " | ".join(cells))
    return rows


def _difference(pair: dict) -> str:
    low, high = pair["ci95"]
    if not (math.isfinite(low) and math.isfinite(high)):
        return f"({pair['difference']:+.3f})"
    return f"({pair['difference']:+.3f} [{low:+.3f}, {high:+.3f}] {pair['verdict']})"


def _write_page(out: Path, report: dict, pictures: list[tuple[str, str]]) -> None:
    curve = report["overfitting"]
    plots = []
    if plot_curves(out / "study_overfitting.png",
                   {"own training frames": [(e, v) for e, v in zip(curve["epoch"], curve["train_pckt"]) if v is not None],
                    "wide held-out set": list(zip(curve["epoch"], curve["wide_pckt"]))},
                   "real-only (seed 1): PCKt@0.2 on its own frames and on held-out frames", "epoch"):
        plots.append("study_overfitting.png")
    judged = report["faithfulness"]
    share = report["oracle_share"]
    notes = [f"rule (fixed before any number): {report['verdict']['rule']}",
             f"verdict: {report['verdict']['summary']}",
             f"the GAN's share of the oracle's gain on new-pose arms: {'n/a' if not math.isfinite(share) else f'{share:.2f}'}",
             f"faithfulness (judge's PCKt@0.2 on the GAN's frames of the changed training poses / on the oracle's): "
             f"{_number(judged['pckt'])}, arms {_number(judged['pckt_arms'])}, seatbelt IoU {_number(judged['seatbelt_iou'])}; "
             f"changed arm keypoints found: GAN {_number(judged['changed_arms_found']['gan'])}, oracle "
             f"{_number(judged['changed_arms_found']['oracle'])}",
             "condition            seeds | wide PCKt | new-pose arms PCKt | narrow PCKt   "
             "(mean, paired difference to real-only [95 % CI] verdict)",
             *table_rows(report["conditions"], report["paired"]), f"{report['minutes']:.0f} minutes"]
    write_page(out / "study.html", "Does pose augmentation help?",
               [PageSection("a training frame (left), the GAN's frame in a new pose (middle), the oracle's frame in the "
                            "same pose (right)", pictures)], plots=plots, notes=notes, image_width=480)


def _number(value) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.3f}"


def pose_pictures(train: DataSet, pools_dir: Path, out: Path, count: int = 4) -> list[tuple[str, str]]:
    """The first `count` frames of the GAN's pool beside their source frame and the oracle's
    frame of the same pose, skeletons drawn: (path relative to study.html, caption) pairs."""
    gan = dataset_of(pool_annotations(pools_dir / "gan"), 128)
    oracle = dataset_of(pool_annotations(pools_dir / "oracle"), 128)
    source = dataset_of(train.train_annotations, 128)
    index_of = {image_id: index for index, image_id in enumerate(source.image_ids)}
    oracle_of = {image_id: index for index, image_id in enumerate(oracle.image_ids)}
    pictures = []
    for index in range(min(count, len(gan))):
        image_id = gan.image_ids[index]
        panels = []
        for dataset, row in ((source, index_of[image_id.rsplit("_gen", 1)[0]]), (gan, index),
                             (oracle, oracle_of[image_id])):
            frame = cv2.cvtColor(cv2.imread(str(dataset.image_paths[row]), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
            height, width = frame.shape[:2]
            people = dataset.keypoints[row] * np.array([width, height]) / dataset.image_size
            panels.append(draw_skeleton(frame, people, thickness=1))
        name = f"images/pose{index}.png"
        save_png(out / name, np.concatenate(panels, axis=1))
        pictures.append((name, f"{image_id}: training frame | GAN | oracle"))
    return pictures
