"""The pose-augmentation study: the verdict rule on made-up numbers, pose faithfulness on toy
generators, and the gpu preset's whole pipeline at 64 px with every training cut to two
iterations, killed halfway and continued with the same command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from common.dataset import PoseDataset
from common.imaging import imagenet_to_gan
from common.maps import nadsnet_targets
from common.models.nadsnet import NADSNetOutput
from conftest import SINGLE_THREAD_ENV
from gan.faithfulness import Faithfulness
from study.verdict import compare, summary, verdicts

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------- the verdict rule


@pytest.mark.parametrize("condition, baseline, verdict", [
    ([0.70, 0.72], [0.60, 0.61], "helps"),  # +0.105 > 2 x 0.02
    ([0.60, 0.62], [0.70, 0.71], "hurts"),  # -0.095 < -2 x 0.02
    ([0.63, 0.68], [0.60, 0.62], "no measurable difference"),  # +0.045 <= 2 x 0.05
    ([0.65, 0.65], [0.65, 0.65], "no measurable difference"),  # 0 is not > 0
])
def test_verdict_rule_on_made_up_numbers(condition, baseline, verdict):
    assert compare(condition, baseline)["verdict"] == verdict


def test_verdicts_cover_every_generated_condition_and_both_metrics():
    def held(pckt, arms):
        return {"wide": {"pckt": pckt, "pckt_arms": arms}, "narrow": {"pckt": pckt, "pckt_arms": arms}}

    conditions = {"real-only": held([0.6, 0.6], [0.5, 0.5]), "generated-highly": held([0.7, 0.7], [0.4, 0.4]),
                  "generated-none": held([0.6, 0.61], [0.5, 0.5])}
    result = verdicts(conditions)
    assert set(result) == {"generated-highly", "generated-none"}
    assert result["generated-highly"]["pckt"]["verdict"] == "helps"
    assert result["generated-highly"]["pckt_arms"]["verdict"] == "hurts"
    assert summary(result).startswith("mixed")


# --------------------------------------------------------------------------- faithfulness


def _key(tensor: torch.Tensor) -> bytes:
    return tensor.detach().float().mul(64).round().to(torch.int32).numpy().tobytes()


class OracleJudge(nn.Module):
    """Stands in for a perfect judge: the ground-truth maps of the real frames it knows, zeros
    for any other frame."""

    image_size = 64

    def __init__(self, frames: torch.Tensor, keypoints: torch.Tensor):
        super().__init__()
        heatmaps, pafs = nadsnet_targets(keypoints, self.image_size)
        self.known = {_key(frame): index for index, frame in enumerate(frames)}
        self.heatmaps, self.pafs = heatmaps, pafs

    def forward(self, images: torch.Tensor) -> NADSNetOutput:
        rows = [self.known.get(_key(image)) for image in images]
        heatmaps = torch.stack([self.heatmaps[r] if r is not None else torch.zeros_like(self.heatmaps[0]) for r in rows])
        pafs = torch.stack([self.pafs[r] if r is not None else torch.zeros_like(self.pafs[0]) for r in rows])
        return NADSNetOutput(heatmaps, pafs, None)


class LookupGenerator(nn.Module):
    """A generator that 'renders' each known pose as its real frame (identity-like), or noise."""

    crop_size = 64

    def __init__(self, semantics: torch.Tensor, frames: torch.Tensor, broken: bool = False):
        super().__init__()
        self.known = {_key(semantic): frame for semantic, frame in zip(semantics, frames)}
        self.broken = broken
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, semantics: torch.Tensor) -> torch.Tensor:
        if self.broken:
            return torch.rand(semantics.shape[0], 3, 64, 64) * 2 - 1
        return torch.stack([self.known[_key(semantic)] for semantic in semantics]) * self.scale


def test_faithfulness_of_an_identity_like_and_a_broken_generator(tiny_dataset_dir):
    from common.maps import gan_input

    data = tiny_dataset_dir(num_images=3, width=128, height=96)
    dataset = PoseDataset(*data.dataset_args(), image_size=64)
    samples = [dataset[i] for i in range(len(dataset))]
    frames = torch.stack([s["image"] for s in samples])
    keypoints = torch.nn.utils.rnn.pad_sequence([s["keypoints"] for s in samples], batch_first=True,
                                                padding_value=float("nan"))
    semantics = gan_input(keypoints, torch.stack([s["seatbelt"] for s in samples]), 64)
    judge = OracleJudge(frames, keypoints)
    measure = Faithfulness(judge, dataset, torch.device("cpu"), batch_size=2)
    identity = measure.measure(LookupGenerator(semantics, imagenet_to_gan(frames)))
    # Perfect maps still miss a keypoint now and then at 64 px: peaks sit at the centres of 4 px
    # output cells, up to 2.8 px away, and 0.2 x a small person's torso can be less.
    assert identity["real_pckt"] > 0.8
    assert identity["generated_pckt"] == pytest.approx(identity["real_pckt"], abs=1e-6)
    assert identity["faithfulness"] == pytest.approx(1.0, abs=1e-6) and identity["faithfulness_arms"] == pytest.approx(1.0)
    broken = measure.measure(LookupGenerator(semantics, imagenet_to_gan(frames), broken=True))
    assert broken["faithfulness"] == 0.0 and broken["generated_pckt"] == 0.0


# --------------------------------------------------------------------------- the whole pipeline


def test_gpu_preset_pipeline_killed_and_continued(tmp_path):
    """The gpu preset's whole pipeline (judge, guidance, GAN with faithfulness, 4 conditions x 3
    seeds, evaluation, report) at 64 px with every training cut to two iterations: started in a
    subprocess, killed once its first trainings are done, then continued with the same command."""
    out = tmp_path / "study"
    command = [sys.executable, "-m", "study", "--preset", "gpu", "--smoke", "--out", str(out)]
    first = subprocess.Popen(command, cwd=ROOT, env=SINGLE_THREAD_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, start_new_session=True)
    deadline = time.monotonic() + 240
    guidance_done = out / "runs" / "guidance" / "done.json"
    while not guidance_done.exists():
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    judge_mark = (out / "runs" / "judge" / "done.json").stat().st_mtime_ns

    from study.__main__ import main

    assert main(["--preset", "gpu", "--smoke", "--out", str(out)]) == 0
    assert (out / "runs" / "judge" / "done.json").stat().st_mtime_ns == judge_mark  # finished runs are kept
    report = json.loads((out / "study.json").read_text())
    assert set(report["conditions"]) == {"real-only", "generated-none", "generated-slightly", "generated-highly"}
    for held_out in report["conditions"].values():
        assert len(held_out["wide"]["pckt"]) == 3 and len(held_out["narrow"]["pckt_arms"]) == 3
    assert set(report["verdict"]["per_condition"]) == {"generated-none", "generated-slightly", "generated-highly"}
    assert report["faithfulness"]["real_pckt"] is not None and "ratio" in report["faithfulness"]
    assert {"config", "versions", "minutes"} <= set(report)
    page = (out / "study.html").read_text()
    assert "verdict:" in page and "rule:" in page and "study_chart.png" in page and "images/pose0.png" in page
    gan_metrics = (out / "runs" / "gan" / "gan_metrics.jsonl").read_text().splitlines()
    assert {"epoch", "iteration", "faithfulness", "faithfulness_arms", "generated_pckt", "real_pckt",
            "generated_seatbelt_iou"} <= set(json.loads(gan_metrics[-1]))
