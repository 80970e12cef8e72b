"""`python -m study --preset cpu|gpu --out DIR [--data-seed N]`: do frames a GAN renders in new
arm poses make NADS-Net generalise better?

Builds the data (every set from seeds drawn from --data-seed), trains the judge, the guidance
network and the GAN, renders the pools of generated and oracle frames once, trains NADS-Net under
each condition for each seed (study.plan), evaluates the final weights on the held-out sets and
writes DIR/study.json and DIR/study.html with the paired statistics and the verdict
(study.verdict, a rule fixed before any number is seen). A stopped study continues with the
same command. `--smoke` runs the whole pipeline at 64 px with every training cut to two
iterations (what the tests run). Each training runs in this process, its output in its
folder's output.log; a training that fails stops the study with one line naming it, its exit
code, the last line it printed and its log (the traceback, if any, is in that log).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Sequence

from common.runs.cli import OneLineParser, run_script
from common.errors import OptionError
from common.runs.files import write_text_atomic
from common.runs.options import positive_int, seed_value
from common.runs.stopping import STOP
from study.plan import NARROW_FAMILIES, PRESETS, DataSet, StudyData, conditions, set_seed, smoke, trainings
from study.report import build_report, condition_results, faithfulness, overfitting, pose_pictures, write_report
from study.runner import Progress, StudyError, check_resumable, is_done, run_in_parallel, run_training


def parse_options(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = OneLineParser(prog="python -m study", description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), required=True,
                        help="cpu: the quick start's networks on a 2-core CPU; gpu: 384 px, the seed's networks, one GPU")
    parser.add_argument("--out", type=Path, required=True, help="the study's folder (a stopped study continues there)")
    parser.add_argument("--data-seed", type=seed_value, default=1,
                        help="draws every synthetic set (training, held-out, judge) from its own seeds; another value "
                        "gives fresh sets, to check that a result is not a property of one draw (use another --out)")
    parser.add_argument("--conditions", type=_condition_list, default=None, metavar="NAME[,NAME...]",
                        help=f"run only these conditions (of {', '.join(CONDITION_NAMES)}) besides the steps every "
                        "study runs; the report covers what ran, and its verdict needs real-only and generated")
    parser.add_argument("--seeds", type=positive_int, default=None, metavar="N",
                        help="at most N training seeds per condition (a development probe; seeds are 1, 2, ..., so a "
                        "later run without it on the same --out adds the rest)")
    parser.add_argument("--jobs", type=positive_int, default=1, metavar="N",
                        help="run the conditions' trainings N at a time, each in a process of its own with an equal "
                        "share of the cores (on a 2-core CPU 2 get through more per hour than 1); the rest runs alone")
    parser.add_argument("--smoke", action="store_true", help="every training cut to two iterations at 64 px (tests)")
    return parser.parse_args(argv), []


CONDITION_NAMES = tuple(condition.name for condition in conditions())


def _condition_list(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(","))
    unknown = [name for name in names if name not in CONDITION_NAMES]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown condition {unknown[0]!r} (choose from {','.join(CONDITION_NAMES)})")
    return names


def build_data(preset, out: Path, data_seed: int) -> StudyData:
    """Every set of the study, each from its own seed, built once under DIR/data."""
    from common.synthetic import ensure_synthetic_dataset

    width, height = preset.frame_size
    root = out / "data"

    def build(train: int, valid: int, seed: str, valid_seed: str, families, valid_families) -> DataSet:
        return DataSet(ensure_synthetic_dataset(root, train=train, valid=valid, seed=set_seed(data_seed, seed),
                                                valid_seed=set_seed(data_seed, valid_seed), width=width, height=height,
                                                arm_poses=families, valid_arm_poses=valid_families, announce=print))

    return StudyData(
        train=build(preset.train_frames, preset.train_valid_frames, "train", "train_valid", NARROW_FAMILIES, None),
        narrow=build(0, preset.held_out_frames, "narrow", "narrow", NARROW_FAMILIES, None),
        wide=build(0, preset.held_out_frames, "wide", "wide", None, None),
        judge=build(preset.judge_frames, preset.train_valid_frames, "judge", "judge_valid", None, None),
        poses=build(preset.pose_library_frames, 0, "poses", "poses", None, None))


def check_folder(out: Path, identity: dict, amp: str) -> str:
    """A study folder holds one preset and data seed: refuse another before any work. Returns
    the precision every training of the study runs in: the preset's `amp`, with 'auto'
    resolved when the folder is made (bf16 where this CPU computes it natively, else float32)
    and kept in study_plan.json, so that a study continued on another machine stays in one."""
    record = out / "study_plan.json"
    if record.is_file():
        recorded = json.loads(record.read_text(encoding="utf-8"))
        differing = ", ".join(f"{key} {recorded.get(key)!r}" for key in identity if recorded.get(key) != identity[key])
        if differing:
            raise OptionError(f"--out {out}", f"it holds a study of {differing}; use another --out")
        return recorded.get("amp", resolve_study_amp(amp))
    out.mkdir(parents=True, exist_ok=True)
    amp = resolve_study_amp(amp)
    write_text_atomic(json.dumps({**identity, "amp": amp}, sort_keys=True) + "\n", record)
    return amp


def resolve_study_amp(amp: str) -> str:
    from common.parallel.devices import cpu_bf16_supported

    if amp != "auto":
        return amp
    return "bf16" if cpu_bf16_supported() else "off"


class StudyClock:
    """Minutes the study has run, over every invocation (a stopped study continues)."""

    def __init__(self, out: Path):
        self.path = out / ".minutes"
        self.before = float(self.path.read_text()) if self.path.is_file() else 0.0
        self.started = time.time()

    def minutes(self) -> float:
        return self.before + (time.time() - self.started) / 60

    def record(self) -> None:
        write_text_atomic(f"{self.minutes():.3f}\n", self.path)


def precision_line(amp: str) -> str:
    """The study's first line: the precision all its trainings run in (one per study, so that
    its conditions compare), and whether this CPU computes it natively."""
    from common.parallel.devices import cpu_bf16_supported

    if amp != "bf16":
        return f"precision: {'float32' if amp == 'off' else amp} for every training of this study"
    native = "this CPU computes bfloat16 natively" if cpu_bf16_supported() else (
        "this CPU has no native bfloat16, so every CPU step is emulated and many times slower; the study keeps "
        "the precision it started in (study_plan.json)")
    return f"precision: bf16 autocast for every training of this study; {native}"


def study(options: argparse.Namespace, messages: list[str] = ()) -> dict:
    preset = smoke(PRESETS[options.preset]) if options.smoke else PRESETS[options.preset]
    if options.seeds is not None:
        preset = replace(preset, main_seeds=min(preset.main_seeds, options.seeds),
                         other_seeds=min(preset.other_seeds, options.seeds))
    out = options.out
    amp = check_folder(out, {"preset": preset.name, "smoke": bool(options.smoke), "data_seed": options.data_seed},
                       preset.amp)
    preset = replace(preset, amp=amp)
    print(precision_line(amp))
    clock = StudyClock(out)
    data = build_data(preset, out, options.data_seed)
    plan = trainings(preset, out, data, options.data_seed, options.conditions)
    check_resumable(plan)
    progress = Progress(plan)
    with STOP:
        try:
            shared = [training for training in plan if training.condition is None]
            for training in shared + ([] if options.jobs > 1 else [t for t in plan if t.condition is not None]):
                if not is_done(training):
                    run_training(training, progress)
                    clock.record()
            if options.jobs > 1:
                run_in_parallel([t for t in plan if t.condition is not None], progress, options.jobs)
        finally:
            progress.close()
            clock.record()
    results, counts = condition_results(plan, data)
    judge = next(training for training in plan if training.name == "judge")
    pools_dir = out / "pools"
    config = {"preset": asdict(preset), "data_seed": options.data_seed, "amp": preset.amp,
              "conditions": {c.name: c.summary for c in conditions(preset.main_dose, preset.dose_fractions)},
              "trainings": [{"name": t.name, "argv": list(t.argv)} for t in plan]}
    report = build_report(results, counts, faithfulness(judge, data.train, pools_dir), overfitting(plan),
                          _plain(config), clock.minutes())
    write_report(out, report, pose_pictures(data.train, pools_dir, out))
    print(f"verdict: {report['verdict']['summary']}; {out / 'study.html'}")
    return report


def _plain(value):
    """JSON-able copy (paths as text)."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)


def main(argv: Sequence[str] | None = None) -> int:
    return run_script("python -m study", parse_options, study, argv, errors=(StudyError,))


if __name__ == "__main__":
    sys.exit(main())
