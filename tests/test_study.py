"""The pose-augmentation study: train_gan.py's pose faithfulness on toy generators, and the
whole pipeline (judge, guidance, GAN, pools, oracle, every condition, evaluation, report) at
64 px with every training cut short, killed halfway and continued with the same command; the
paired rule on made-up numbers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from common.posedata.dataset import PoseDataset
from common.posedata.imaging import imagenet_to_gan
from common.posedata.maps import nadsnet_targets
from common.errors import OptionError
from common.models.nadsnet import NADSNetOutput
from conftest import SINGLE_THREAD_ENV
from gan.faithfulness import Faithfulness
from study.verdict import oracle_share, paired, paired_table, summary

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


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
    from common.posedata.maps import gan_input

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


def test_pipeline_killed_and_continued(tmp_path):
    """The cpu preset's whole pipeline at 64 px, every training cut short: started in a
    subprocess, killed once its first trainings are done, then continued with the same command
    (its conditions two at a time, each in a process of its own);
    study.json holds every field the machines read, and another preset is refused on its folder
    before anything is built."""
    out = tmp_path / "study"
    command = [sys.executable, "-m", "study", "--preset", "cpu", "--smoke", "--out", str(out)]
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

    assert main(["--preset", "cpu", "--smoke", "--jobs", "2", "--out", str(out)]) == 0  # conditions 2 at a time
    assert (out / "runs" / "judge" / "done.json").stat().st_mtime_ns == judge_mark  # finished runs are kept
    report = json.loads((out / "study.json").read_text())
    conditions = report["conditions"]
    assert {"real-only", "oracle", "generated", "generated-unchanged", "generated-0.25", "seed-recipe",
            "geometric"} == set(conditions)  # every condition but the opt-in generated-online
    assert conditions["real-only"]["seeds"] == [1, 2] and conditions["geometric"]["seeds"] == [1]
    for held_out in ("wide", "narrow", "new_pose_arms"):
        assert set(conditions["oracle"][held_out]) == {"pckt", "pckt_arms", "seatbelt_iou"}
        assert len(conditions["oracle"][held_out]["pckt"]) == 2
    paired = report["paired"]["generated"]["new_pose_arms.pckt_arms"]
    assert {"difference", "ci95", "verdict"} <= set(paired) and len(paired["ci95"]) == 2
    assert "real-only" not in report["paired"]
    assert "oracle_share" in report and {"train_pckt", "wide_pckt"} <= set(report["overfitting"])
    assert len(report["overfitting"]["train_pckt"]) == 1 and report["overfitting"]["train_pckt"][0] is not None
    assert {"pckt", "pckt_arms", "seatbelt_iou", "changed_arms_found"} <= set(report["faithfulness"])
    # 'auto', resolved once for the folder: float32 on this (conftest's) CPU without native bf16
    plan = json.loads((out / "study_plan.json").read_text())
    assert {"config", "versions", "minutes"} <= set(report) and report["config"]["amp"] == plan["amp"] == "off"
    trainings = [t for t in report["config"]["trainings"] if t["name"] != "pool-oracle"]  # the renderer has no precision
    assert all(t["argv"][t["argv"].index("--amp") + 1] == "off" for t in trainings)  # one precision for every training
    assert all(entry["minutes"] >= 0 for entry in report["config"]["trainings"])  # each step's time, for the budget
    page = (out / "study.html").read_text()
    assert page.index("rule (fixed before any number)") < page.index("verdict:") < page.index("n=2")
    assert "images/pose0.png" in page
    # the oracle pool re-renders the GAN pool's poses: the same frames, the same poses
    gan_pool = json.loads((out / "pools" / "gan" / "Train_keypoint_Annotation_sample.json").read_text())
    oracle_pool = json.loads((out / "pools" / "oracle" / "Train_keypoint_Annotation_sample.json").read_text())
    assert [a["image_id"] for a in gan_pool["annotations"] if a["label"] == "Person"] == \
        [a["image_id"] for a in oracle_pool["annotations"] if a["label"] == "Person"]
    # another preset or data seed on this folder: refused at once, nothing built
    before = sorted(path.name for path in (out / "data").iterdir())
    assert main(["--preset", "gpu", "--smoke", "--out", str(out)]) == 2
    assert main(["--preset", "cpu", "--smoke", "--data-seed", "7", "--out", str(out)]) == 2
    assert sorted(path.name for path in (out / "data").iterdir()) == before


# --------------------------------------------------------------------------- the paired rule


@pytest.mark.parametrize("condition, baseline, verdict", [
    ([0.62, 0.65, 0.61, 0.66, 0.63], [0.60, 0.62, 0.60, 0.63, 0.61], "helps"),  # every seed gains
    ([0.58, 0.60, 0.57, 0.61, 0.59], [0.60, 0.62, 0.60, 0.63, 0.61], "hurts"),
    ([0.70, 0.55, 0.66, 0.58, 0.62], [0.60, 0.62, 0.60, 0.63, 0.61], "no measurable difference"),
    ([0.61], [0.60], "no measurable difference"),  # one seed: no interval
])
def test_paired_rule_on_made_up_numbers(condition, baseline, verdict):
    result = paired(condition, baseline)
    assert result["verdict"] == verdict
    if len(condition) > 1:
        low, high = result["ci95"]
        assert low < result["difference"] < high


def test_pairing_follows_the_seeds_not_the_order_and_the_interval_is_students():
    # The same seeds in another order pair the same way.
    table = paired_table({
        "real-only": {"seeds": [1, 2, 3], "wide": {"pckt": [0.5, 0.6, 0.7]}},
        "generated": {"seeds": [3, 1, 2], "wide": {"pckt": [0.72, 0.52, 0.62]}},
    })
    result = table["generated"]["wide.pckt"]
    assert result["difference"] == pytest.approx(0.02)
    assert result["ci95"][0] == pytest.approx(0.02) and result["verdict"] == "helps"  # zero spread
    differences = [0.01, 0.03, 0.02, 0.04]
    half = paired([d + 0.5 for d in differences], [0.5] * 4)["ci95"]
    expected = 3.182446 * np.std(differences, ddof=1) / 2  # t(0.975, 3)
    assert half[1] - np.mean(differences) == pytest.approx(expected, rel=1e-5)


def test_the_verdict_names_the_primary_comparison_and_the_ceiling():
    table = {"generated": {"new_pose_arms.pckt_arms": paired([0.6, 0.62, 0.61], [0.5, 0.5, 0.52]),
                           "narrow.pckt": paired([0.7, 0.7, 0.71], [0.7, 0.71, 0.7])},
             "oracle": {"new_pose_arms.pckt_arms": paired([0.7, 0.72, 0.71], [0.5, 0.5, 0.52])}}
    text = summary(table)
    assert text.startswith("yes") and "oracle" in text
    assert oracle_share(table) == pytest.approx(0.31 / 0.61)
    table["generated"]["narrow.pckt"] = paired([0.6, 0.61, 0.6], [0.7, 0.71, 0.7])
    assert summary(table).startswith("no:")


# --------------------------------------------------------------------------- trainings run side by side

_SLEEPER = ("import signal, sys, time\n"
            "signal.signal(signal.SIGINT, lambda *_: sys.exit(130))\n"
            "time.sleep(float(sys.argv[1]))\n"
            "sys.exit(int(sys.argv[2]))\n")


def _side_by_side(tmp_path, monkeypatch, behaviour):
    """Three trainings, two at a time; each 'training' a process that sleeps then exits as
    `behaviour[name]` = (seconds, exit code) says, or exits 130 on SIGINT."""
    from study import runner
    from study.plan import Training

    started = []

    def start(training, threads):
        seconds, code = behaviour[training.name]
        started.append((training.name, threads))
        log = open(training.directory / "output.log", "a")
        return subprocess.Popen([sys.executable, "-c", _SLEEPER, str(seconds), str(code)], stdout=log, stderr=log)

    monkeypatch.setattr(runner, "_start", start)
    trainings = [Training(name, "nadsnet", tmp_path / name, ("--x",), 1, condition="c") for name in behaviour]
    for training in trainings:
        training.directory.mkdir()
    return runner, trainings, started


def test_side_by_side_trainings_pass_a_stop_on_and_none_starts_after_it(tmp_path, monkeypatch):
    from common.training.stopping import STOP, TrainingInterrupted

    runner, trainings, started = _side_by_side(tmp_path, monkeypatch, {"a": (30, 0), "b": (30, 0), "c": (0, 0)})
    progress = runner.Progress(trainings, stream=open(os.devnull, "w"))
    timer = __import__("threading").Timer(1.0, lambda: setattr(STOP, "requested", signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(TrainingInterrupted):
            runner.run_in_parallel(trainings, progress, jobs=2)
    finally:
        timer.cancel()
        STOP.requested = None
    assert [name for name, _ in started] == ["a", "b"], "nothing starts after a stop request"
    assert all(threads == max(1, len(os.sched_getaffinity(0)) // 2) for _, threads in started)
    assert not any(runner.is_done(training) for training in trainings)


def test_a_failed_side_by_side_training_stops_the_others_and_is_named(tmp_path, monkeypatch):
    runner, trainings, started = _side_by_side(tmp_path, monkeypatch, {"a": (30, 0), "b": (0.2, 3), "c": (0, 0)})
    progress = runner.Progress(trainings, stream=open(os.devnull, "w"))
    began = time.monotonic()
    with pytest.raises(runner.StudyError, match="training b failed \\(exit code 3\\)"):
        runner.run_in_parallel(trainings, progress, jobs=2)
    assert time.monotonic() - began < 20, "the running training was told to stop, not waited for"
    assert [name for name, _ in started] == ["a", "b"] and not runner.is_done(trainings[0])


def test_each_step_waits_for_the_steps_it_reads_and_no_more():
    """The cpu preset's plan: the GAN waits for the guidance network, the pools for the GAN (the
    oracle's for the GAN's pool), a condition for its pool or generator; the judge, real-only
    and geometric wait for nothing, so side by side they run while the GAN trains."""
    from study.plan import PRESETS, DataSet, StudyData, conditions, trainings
    from study.runner import prerequisites

    data = StudyData(*(DataSet(Path("/d") / name) for name in ("train", "narrow", "wide", "judge", "poses")))
    plan = trainings(PRESETS["cpu"], Path("/o"), data, 1)
    assert not any(step.condition == "generated-online" for step in plan)  # opt-in: named with --conditions
    every_condition = tuple(condition.name for condition in conditions())
    needs = prerequisites(trainings(PRESETS["cpu"], Path("/o"), data, 1, every_condition))
    assert needs["judge"] == needs["guidance"] == needs["real-only-seed1"] == needs["geometric-seed3"] == set()
    assert needs["gan"] == {"guidance"}
    assert needs["pool-gan"] == needs["pool-gan-unchanged"] == {"gan"} and needs["pool-oracle"] == {"pool-gan"}
    assert needs["oracle-seed5"] == {"pool-oracle"} and needs["generated-seed1"] == {"pool-gan"}
    assert needs["generated-unchanged-seed1"] == {"pool-gan-unchanged"}
    assert needs["seed-recipe-seed1"] == {"gan"} and needs["generated-online-seed1"] == {"gan"}


def test_side_by_side_a_step_starts_once_what_it_reads_is_done(tmp_path, monkeypatch):
    """Two places: 'b' reads 'a''s folder, so the independent 'c' takes the second place and 'b'
    starts only after 'a' has finished."""
    from study.plan import Training

    runner, trainings, started = _side_by_side(tmp_path, monkeypatch, {"a": (1.0, 0), "b": (0, 0), "c": (3.0, 0)})
    finished = []
    monkeypatch.setattr(runner, "_finish", lambda training, code, *_: finished.append(training.name))
    trainings[1] = Training("b", "nadsnet", tmp_path / "b", ("--weights", str(tmp_path / "a" / "best.pth")), 1, "c")
    runner.run_in_parallel(trainings, runner.Progress(trainings, stream=open(os.devnull, "w")), jobs=2)
    assert [name for name, _ in started] == ["a", "c", "b"]
    assert finished.index("a") < [name for name, _ in started].index("b") and sorted(finished) == ["a", "b", "c"]


def test_the_time_left_counts_the_epochs_of_running_trainings_since_they_started(tmp_path, monkeypatch):
    """Three trainings of 100 iterations in 10 epochs; two run side by side, 5 epochs further
    after 60 s (one resumed at epoch 2, whose earlier epochs are not this run's speed): 100
    iterations in 60 s, 300 - 50 - 70 = 180 left, so about 108 s."""
    from study import runner
    from study.plan import Training

    trainings = [Training(name, "nadsnet", tmp_path / name, (), 100, "c", epochs=10) for name in ("a", "b", "c")]
    epochs = {"a": 0, "b": 2, "c": 0}
    monkeypatch.setattr(runner, "_epochs_done", lambda training: epochs[training.name])
    progress = runner.Progress(trainings, stream=open(os.devnull, "w"))
    progress.start(trainings[0]), progress.start(trainings[1])
    assert progress.line().endswith("estimating time left")
    epochs.update(a=5, b=7)
    progress.started -= 60
    assert progress.line().endswith("about 2 min left")  # 108 s
    progress.started -= 600  # eleven times as long for the same progress: 1,188 s
    assert progress.line().endswith("about 20 min left")


def test_the_precision_is_chosen_once_per_study_folder(tmp_path, monkeypatch):
    from study.runner import check_folder, precision_line

    identity = {"preset": "cpu", "smoke": False, "data_seed": 0}
    monkeypatch.setattr("common.parallel.devices.cpu_bf16_supported", lambda: True)
    assert check_folder(tmp_path / "native", identity, "auto") == "bf16"
    assert check_folder(tmp_path / "pinned", identity, "off") == "off"
    assert "natively" in precision_line("bf16")
    monkeypatch.setattr("common.parallel.devices.cpu_bf16_supported", lambda: False)
    assert check_folder(tmp_path / "other", identity, "auto") == "off"
    # continued on a CPU without native bf16: the study stays in the precision it started in, and says the cost
    assert check_folder(tmp_path / "native", identity, "auto") == "bf16"
    assert "emulated" in precision_line("bf16") and "float32" in precision_line("off")
    with pytest.raises(OptionError, match="data_seed 0"):
        check_folder(tmp_path / "native", {**identity, "data_seed": 1}, "auto")


def test_a_done_step_counts_whatever_its_output_only_flags_but_not_with_other_settings(tmp_path):
    """A step marked done without --no-html is still done for a plan that writes no page; a done
    step with another learning rate makes the folder refused, naming its done mark."""
    from common.errors import CheckpointError
    from study.plan import Training
    from study.runner import DONE, check_resumable

    directory = tmp_path / "runs" / "guidance"
    directory.mkdir(parents=True)
    (directory / DONE).write_text(json.dumps({"name": "guidance", "argv": ["--preset", "cpu", "--lr", "5e-4"]}))
    check_resumable([Training("guidance", "nadsnet", directory, ("--preset", "cpu", "--lr", "5e-4", "--no-html"), 1)])
    with pytest.raises(CheckpointError, match="guidance/done.json: this training was run with other flags"):
        check_resumable([Training("guidance", "nadsnet", directory, ("--preset", "cpu", "--lr", "1e-3", "--no-html"), 1)])
