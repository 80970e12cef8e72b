"""`python -m study --preset cpu|gpu --out DIR`: does pose augmentation make NADS-Net generalise
better? Builds the data, trains the judge, the guidance network, the GAN and NADS-Net under
four conditions (study.plan), evaluates them on two held-out sets and writes DIR/study.json and
DIR/study.html with the verdict (study.verdict, a rule fixed before any number is seen).
A stopped study continues with the same command. `--smoke` cuts every training to two
iterations at 64 px: the whole pipeline in about a minute (what the tests run)."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

from common.cli import OneLineParser, run_script
from common.files import write_text_atomic
from common.stopping import STOP
from study.plan import NARROW_FAMILIES, NARROW_SEED, PRESETS, TRAIN_SEED, WIDE_SEED, DataSet, smoke, trainings
from study.report import condition_results, faithfulness, pose_pictures, write_report
from study.runner import Progress, StudyError, check_resumable, is_done, run_training


def parse_options(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = OneLineParser(prog="python -m study", description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), required=True,
                        help="cpu: about 80 minutes on a 2-core CPU; gpu: 384 px, the seed's networks, one GPU")
    parser.add_argument("--out", type=Path, required=True, help="the study's folder (a stopped study continues there)")
    parser.add_argument("--smoke", action="store_true", help="every training cut to two iterations at 64 px (tests)")
    return parser.parse_args(argv), []


def build_data(preset, out: Path) -> tuple[DataSet, DataSet, DataSet]:
    """The training set (arms on the wheel and in the lap) with its narrow held-out set, and the
    wide held-out set: each from its own seed, built once under DIR/data."""
    from common.synthetic import ensure_synthetic_dataset

    width, height = preset.frame_size
    root = out / "data"
    narrow_root = ensure_synthetic_dataset(root, train=preset.train_frames, valid=preset.held_out_frames,
                                           seed=TRAIN_SEED, valid_seed=NARROW_SEED, width=width, height=height,
                                           arm_poses=NARROW_FAMILIES, announce=print)
    wide_root = ensure_synthetic_dataset(root, train=0, valid=preset.held_out_frames, seed=WIDE_SEED,
                                         valid_seed=WIDE_SEED, width=width, height=height, valid_arm_poses=None,
                                         announce=print)
    return DataSet(narrow_root), DataSet(narrow_root), DataSet(wide_root)


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


def study(options: argparse.Namespace, messages: list[str] = ()) -> dict:
    preset = smoke(PRESETS[options.preset]) if options.smoke else PRESETS[options.preset]
    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    clock = StudyClock(out)
    train, narrow, wide = build_data(preset, out)
    plan = trainings(preset, out, train, narrow, wide)
    check_resumable(plan)
    progress = Progress(plan)
    with STOP:
        try:
            for training in plan:
                if not is_done(training):
                    run_training(training, progress)
                    clock.record()
        finally:
            progress.close()
            clock.record()
    results = condition_results(plan, narrow, wide)
    gan = next(training for training in plan if training.script == "gan")
    config = {"preset": asdict(preset), "trainings": [{"name": t.name, "argv": list(t.argv)} for t in plan]}
    report = write_report(out, results, faithfulness(gan), _plain(config), clock.minutes(),
                          pose_pictures(gan, wide, out))
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
