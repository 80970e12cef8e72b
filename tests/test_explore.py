"""The study's exploration stage (study.explore): the whole stage at 64 px with every training
cut short, its report, that it reads nothing held out, its levers per preset, the pool filter's
rule; and that `python -m study --preset ... --out ...` still runs the main study."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import SINGLE_THREAD_ENV
from study.plan import PRESETS, SET_SEED_OFFSETS, DataSet, set_seed

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")
LEVER_FIELDS = {"summary", "seeds", "explore_valid", "new_pose_arms", "trained_family_arms", "paired"}
HELD_OUT_SETS = ("narrow", "wide", "judge", "judge_valid")  # what the stage must never read


def _annotation_frames(path: Path) -> set[str]:
    return {a["image_id"] for a in json.loads(path.read_text())["annotations"] if a.get("label") == "Person"}


def _held_out_seeds(data_seed: int) -> list[int]:
    return [set_seed(data_seed, name) for name in HELD_OUT_SETS]


def test_explore_stage_smoke(tmp_path):
    """`python -m study explore --preset cpu --smoke`: every lever with its seed and paired
    entries in explore.json, no training's argv names a held-out or judge set, the filtered pool
    holds at most the frames of the pool it filters; run again, it keeps what it trained."""
    out = tmp_path / "explore"
    command = [sys.executable, "-m", "study", "explore", "--preset", "cpu", "--smoke", "--out", str(out)]
    done = subprocess.run(command, cwd=ROOT, env=SINGLE_THREAD_ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1].startswith("winner: ")
    report = json.loads((out / "explore.json").read_text())
    assert set(report["levers"]) == {"gan-64px", "gan-longer", "occluded-omitted", "filtered"}
    for name, lever in report["levers"].items():
        assert LEVER_FIELDS <= set(lever) and lever["seeds"] == [1], name
        assert {"pckt", "pckt_arms"} <= set(lever["explore_valid"]) and len(lever["new_pose_arms"]["pckt_arms"]) == 1
        for baseline in ("generated", "real-only"):
            assert {"difference", "ci95", "verdict", "seeds"} <= set(lever["paired"][baseline]["new_pose_arms.pckt_arms"])
    assert set(report["baselines"]) == {"real-only", "generated"} and report["winner"] == "none"  # 1 seed: no interval
    assert "pinning" in report and (out / "explore.html").is_file()

    trainings = report["config"]["trainings"]
    assert {t["name"] for t in trainings if t["name"].startswith("explore-")} == {
        f"explore-{arm}-seed1" for arm in ("real-only", *report["levers"])}
    assert "generated-seed1" in {t["name"] for t in trainings}  # the main study's own condition, shared
    held_out = [f"-s{seed}-" for seed in _held_out_seeds(1)]
    assert not [(t["name"], word) for t in trainings for word in t["argv"] if any(tag in word for tag in held_out)]
    assert not any(tag in path.name for path in (out / "data").iterdir() for tag in held_out)  # never even built
    filtered = _annotation_frames(out / "pools" / "lever-filtered" / "Train_keypoint_Annotation_sample.json")
    pool = _annotation_frames(out / "pools" / "gan" / "Train_keypoint_Annotation_sample.json")
    assert filtered and filtered <= pool
    record = json.loads((out / "pools" / "lever-filtered" / "filter.json").read_text())
    assert record["kept"] == len(filtered) <= record["frames"] == len(pool)
    omitted = json.loads((out / "runs" / "lever-occluded-omitted" / "latest_net_G.json").read_text())
    assert omitted["occluded_joints"] == "omitted"  # the generator's own choice, which its pool used
    assert json.loads((out / "pools" / "lever-occluded-omitted" / "Train_keypoint_Annotation_sample.json")
                      .read_text())["info"]["occluded_joints"] == "omitted"

    from study.__main__ import main

    mark = (out / "runs" / "explore-filtered-seed1" / "done.json").stat().st_mtime_ns
    assert main(["explore", "--preset", "cpu", "--smoke", "--out", str(out)]) == 0
    assert (out / "runs" / "explore-filtered-seed1" / "done.json").stat().st_mtime_ns == mark  # resumed, not rerun


def test_the_main_study_command_is_unchanged(monkeypatch, tmp_path):
    """`python -m study --preset cpu --out X` parses and runs the main study as before; the
    word `explore` first runs the exploration stage instead."""
    import study.__main__ as entry
    import study.explore

    ran = []
    monkeypatch.setattr(entry, "study", lambda options, messages: ran.append(("study", options)))
    monkeypatch.setattr(study.explore, "explore", lambda options, messages: ran.append(("explore", options)))
    assert entry.main(["--preset", "cpu", "--out", str(tmp_path / "x")]) == 0
    assert entry.main(["--preset", "gpu", "--conditions", "real-only,generated", "--jobs", "2", "--out", "y"]) == 0
    assert entry.main(["explore", "--preset", "cpu", "--seeds", "2", "--out", "z"]) == 0
    assert [kind for kind, _ in ran] == ["study", "study", "explore"]
    first, second, third = (options for _, options in ran)
    assert (first.preset, first.out, first.conditions, first.seeds, first.jobs) == ("cpu", tmp_path / "x", None, None, 1)
    assert second.conditions == ("real-only", "generated") and second.jobs == 2
    assert (third.preset, third.seeds, third.out) == ("cpu", 2, Path("z")) and not hasattr(third, "conditions")
    assert entry.main(["explore", "--preset", "cpu", "--conditions", "oracle", "--out", "z"]) == 2  # no such option


def test_the_cpu_presets_levers_and_plan_read_only_the_training_side():
    """The cpu preset's stage: 4 levers, 4 GANs (the preset's and 3 levers'), 18 NADS-Net runs
    (6 arms x 3 seeds), every one on the training side; the gpu preset's GAN already trains at
    NADS-Net's size, so its resolution lever is not run."""
    from study.explore import EXPLORE_SEEDS, ExploreData, explore_trainings, levers

    preset = PRESETS["cpu"]
    chosen, skipped = levers(preset)
    assert [lever.name for lever in chosen] == ["gan-128px", "gan-longer", "occluded-omitted", "filtered"] and not skipped
    assert dict(zip(*[iter(chosen[1].gan_flags)] * 2)) == {"--niter": "24", "--niter-decay": "0"}
    gpu, gpu_skipped = levers(PRESETS["gpu"])
    assert "gan-384px" in gpu_skipped and [lever.name for lever in gpu] == ["gan-longer", "occluded-omitted", "filtered"]

    data = ExploreData(*(DataSet(Path("/d") / name) for name in ("train", "poses", "valid")))
    plan = explore_trainings(preset, Path("/o"), data, 1, EXPLORE_SEEDS, chosen)
    scripts = [training.script for training in plan]
    assert scripts.count("gan") == 4 and scripts.count("generate") == 4 and scripts.count("filter") == 1
    assert scripts.count("nadsnet") == 1 + 6 * EXPLORE_SEEDS  # the guidance network and the arms
    assert "--image-size" in next(t for t in plan if t.name == "lever-gan-128px").argv
    words = {word for training in plan for word in training.argv}
    assert not any(word.startswith("/d/valid") for word in words)  # explore_valid is for the report alone
    assert {word.split("/")[2] for word in words if word.startswith("/d/")} == {"train", "poses"}
    assert "explore_valid" in SET_SEED_OFFSETS and set_seed(1, "explore_valid") not in _held_out_seeds(1)


def test_the_pool_filter_keeps_what_the_guidance_reads_and_one_frame_per_source():
    from study.pool_filter import kept_frames

    scores = np.array([0.9, 0.2, 0.4, 0.1, np.nan, 0.5])
    sources = ["a", "a", "b", "b", "c", "d"]
    keep = kept_frames(scores, sources, 0.5)
    # a: the one read well; b: none read well, its best kept; c: nothing to judge, kept; d: at the threshold
    assert keep.tolist() == [True, False, True, False, True, True]
