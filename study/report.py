"""The study's results: every condition's NADS-Net evaluated on both held-out sets, the GAN's
pose faithfulness, the verdict, and `study.json` / `study.html`."""

from __future__ import annotations

import json
import math
import platform
from pathlib import Path
from statistics import fmean
from typing import Any

import numpy as np
import torch

from common.checkpoints import load_file
from common.dataset import PoseDataset, make_loader
from common.files import write_text_atomic
from common.models.factory import build_nadsnet
from common.run_folder import provenance
from common.sampling import ResumableSampler
from common.visualize import PageSection, draw_skeleton, plot_curves, save_png, write_page
from nadsnet_pvt.evaluate import evaluate
from study.plan import CONDITIONS, DataSet, Training
from study.verdict import RULE, summary, verdicts

REPORTED = ("pckt", "pckt_arms", "seatbelt_iou")


def final_network(training: Training) -> torch.nn.Module:
    """The NADS-Net a training ended with (its last state: the comparison uses the final weights,
    not a checkpoint chosen on a held-out set)."""
    parts = load_file(training.directory / "nadsnet_train_state.pth", "training state")["parts"]
    net = build_nadsnet(parts["nadsnet_config"])
    net.load_state_dict(parts["nadsnet"])
    return net


def evaluate_on(net: torch.nn.Module, held_out: DataSet, image_size: int) -> dict[str, float]:
    dataset = PoseDataset(held_out.annotations, held_out.root / "Raw_Images", held_out.root / "Seatbelt_Mask",
                          image_size=image_size)
    sampler = ResumableSampler(len(dataset), 8, shuffle=False, drop_last=False, even=False)
    sampler.set_epoch(0)
    summary_ = evaluate(net, make_loader(dataset, sampler, 0, torch.device("cpu")), image_size, False, "cpu").summary
    return {key: summary_[key] for key in REPORTED}


def condition_results(trainings: list[Training], narrow: DataSet, wide: DataSet) -> dict[str, dict]:
    """{condition: {'narrow'|'wide': {metric: [one value per seed]}}}."""
    results: dict[str, dict] = {name: {"narrow": {m: [] for m in REPORTED}, "wide": {m: [] for m in REPORTED}}
                                for name in CONDITIONS}
    for training in trainings:
        if training.condition is None:
            continue
        net = final_network(training)
        for held_out_name, held_out in (("narrow", narrow), ("wide", wide)):
            for metric, value in evaluate_on(net, held_out, net.image_size).items():
                results[training.condition][held_out_name][metric].append(value)
    return results


def faithfulness(gan: Training) -> dict[str, Any]:
    """The GAN's last judged epoch (gan_metrics.jsonl), and every epoch's for the curve."""
    lines = (gan.directory / "gan_metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    last = records[-1]
    return {"ratio": last["faithfulness"], "arms": last["faithfulness_arms"], "generated_pckt": last["generated_pckt"],
            "real_pckt": last["real_pckt"], "generated_seatbelt_iou": last["generated_seatbelt_iou"],
            "per_epoch": [{key: record[key] for key in ("epoch", "iteration", "faithfulness", "faithfulness_arms")}
                          for record in records]}


def versions() -> dict[str, str]:
    import cv2
    import timm
    import torchvision

    return {**provenance(), "torchvision": str(torchvision.__version__), "timm": timm.__version__,
            "opencv": cv2.__version__, "numpy": np.__version__, "platform": platform.platform()}


def write_report(out: Path, results: dict, judged: dict, config: dict, minutes: float, pictures: list) -> dict:
    """study.json and study.html; returns what study.json holds."""
    per_condition = verdicts(results)
    report = {"conditions": results, "faithfulness": judged,
              "verdict": {"rule": RULE, "per_condition": per_condition, "summary": summary(per_condition)},
              "config": config, "versions": versions(), "minutes": minutes}
    write_text_atomic(json.dumps(_without_nan(report), indent=2) + "\n", out / "study.json")
    _write_page(out, report, pictures)
    return report


def _without_nan(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _without_nan(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_without_nan(item) for item in value]
    return value


def table_rows(results: dict) -> list[str]:
    """'condition | narrow PCKt | narrow arms | wide PCKt | wide arms | wide IoU' as mean (spread)."""
    rows = []
    for name, held_out in results.items():
        cells = [_cell(held_out[h][m]) for h, m in (("narrow", "pckt"), ("narrow", "pckt_arms"), ("wide", "pckt"),
                                                     ("wide", "pckt_arms"), ("wide", "seatbelt_iou"))]
        rows.append(f"{name:<20} " + " | ".join(cells))
    return rows


def _cell(values: list[float]) -> str:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return "n/a"
    return f"{fmean(finite):.3f} ({max(finite) - min(finite):.3f})"


def _write_page(out: Path, report: dict, pictures: list[tuple[str, str]]) -> None:
    results = report["conditions"]
    curves = {f"{name} wide PCKt": [(seed, value) for seed, value in enumerate(held["wide"]["pckt"], 1)]
              for name, held in results.items()}
    plot_curves(out / "study_chart.png", curves, "PCKt@0.2 on the wide held-out set, per seed", "seed")
    header = "condition            narrow PCKt | narrow arms | wide PCKt | wide arms | wide seatbelt IoU  (mean (max-min) over seeds)"
    judged = report["faithfulness"]
    notes = [f"verdict: {report['verdict']['summary']}", f"rule: {report['verdict']['rule']}",
             *(f"{name}: PCKt {v['pckt']['verdict']} ({v['pckt']['difference']:+.3f}, spread {v['pckt']['spread']:.3f}); "
               f"arms {v['pckt_arms']['verdict']} ({v['pckt_arms']['difference']:+.3f}, spread {v['pckt_arms']['spread']:.3f})"
               for name, v in report["verdict"]["per_condition"].items()),
             f"pose faithfulness of the generator (judge's PCKt on generated / on real held-out frames): "
             f"{_number(judged['ratio'])}, arms {_number(judged['arms'])}",
             header, *table_rows(results), f"{report['minutes']:.0f} minutes"]
    write_page(out / "study.html", "Does pose augmentation help?", [PageSection("generated frames in changed poses "
               "(left) beside the real frames they come from (right)", pictures)], plots=["study_chart.png"], notes=notes)


def _number(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def pose_pictures(gan: Training, wide: DataSet, out: Path, count: int = 4) -> list[tuple[str, str]]:
    """Frames the trained generator renders from held-out poses with 'highly' changed arms,
    beside the real frames (skeletons drawn): (path relative to study.html, caption) pairs."""
    from common.augment import arm_augment
    from common.imaging import imagenet_to_uint8
    from common.models.factory import load_generator
    from common.rendering import GeneratedSamples

    generator, config = load_generator(gan.directory / "latest_net_G.pth")
    size = 128
    dataset = PoseDataset(wide.annotations, wide.root / "Raw_Images", wide.root / "Seatbelt_Mask", image_size=size)
    renderer = GeneratedSamples(generator, "cpu", "converted", eval_mode=False)
    pictures = []
    for index in range(min(count, len(dataset))):
        sample = dataset[index]
        pose = arm_augment(sample["keypoints"].numpy(), "highly", np.random.default_rng([7, index]), image_size=size)
        pose = torch.from_numpy(pose.astype(np.float32))
        frame = renderer.render(pose[None], sample["seatbelt"][None], size)[0]
        generated = draw_skeleton(imagenet_to_uint8(frame), pose.numpy())
        real = draw_skeleton(imagenet_to_uint8(sample["image"]), sample["keypoints"].numpy())
        name = f"images/pose{index}.png"
        save_png(out / name, np.concatenate([generated, real], axis=1))
        pictures.append((name, f"{dataset.image_ids[index]}: generated ('highly' arms) | real"))
    return pictures
