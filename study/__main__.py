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

`python -m study explore --preset cpu|gpu --out DIR [--data-seed N] [--seeds N] [--jobs N]
[--smoke]` runs the exploration stage instead (study.explore): the levers that might give the
generator its best chance, each measured against `generated` on a validation set of the
training side only, never on the held-out sets or the judge's frames; DIR/explore.json and
DIR/explore.html name the winner, which a person may then pin into the preset.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Sequence

from common.training.cli import OneLineParser, run_script
from common.training.options import positive_int, seed_value
from study.plan import PRESETS, build_data, conditions, smoke, trainings
from study.report import build_report, condition_results, faithfulness, overfitting, plain, pose_pictures, write_report
from study.runner import StudyClock, StudyError, folder_preset, run_plan, step_minutes

EXPLORE = "explore"  # the first word that runs the exploration stage instead of the main study
EXPLORE_DESCRIPTION = (
    "The exploration stage: the levers that might give the generator its best chance (the GAN at NADS-Net's input "
    "size, trained twice as long, told nothing of occluded joints; the preset GAN's pool filtered by the guidance "
    "network), each in NADS-Net's training against `generated`, judged on a validation set of the training side only "
    "(never the held-out sets nor the judge's frames), 3 seeds (1 with --smoke, whose GAN trains at 32 px). "
    "DIR/explore.json and DIR/explore.html name the winner; pinning it into the preset is left to a person.")


def _add_shared_options(parser: argparse.ArgumentParser, folder: str) -> None:
    """The options the main study and the exploration stage share; `folder`: what --out holds."""
    parser.add_argument("--preset", choices=sorted(PRESETS), required=True,
                        help="cpu: the quick start's networks on a 2-core CPU; gpu: 384 px, the seed's networks, one GPU")
    parser.add_argument("--out", type=Path, required=True, help=f"{folder} (a stopped run continues there)")
    parser.add_argument("--data-seed", type=seed_value, default=1,
                        help="draws every synthetic set (training, held-out, judge) from its own seeds; another value "
                        "gives fresh sets, to check that a result is not a property of one draw (use another --out)")
    parser.add_argument("--seeds", type=positive_int, default=None, metavar="N",
                        help="at most N training seeds per condition (a development probe; seeds are 1, 2, ..., so a "
                        "later run without it on the same --out adds the rest)")
    parser.add_argument("--jobs", type=positive_int, default=1, metavar="N",
                        help="run the steps N at a time, each in a process of its own with an equal share of the cores, "
                        "each as soon as the steps it reads are done (on a 2-core CPU 2 get through more per hour "
                        "than 1)")
    parser.add_argument("--smoke", action="store_true", help="every training cut to two iterations at 64 px (tests)")


def parse_options(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    """The main study's options."""
    parser = OneLineParser(prog="python -m study", description=__doc__.split("\n\n")[0],
                           epilog=f"python -m study {EXPLORE} --help: the exploration stage's options")
    _add_shared_options(parser, "the study's folder")
    parser.add_argument("--conditions", type=_condition_list, default=None, metavar="NAME[,NAME...]",
                        help=f"run only these conditions (of {', '.join(CONDITION_NAMES)}) besides the steps every "
                        "study runs (default: all but " + ", ".join(OPT_IN_CONDITIONS) + "); the report covers what "
                        "ran, and its verdict needs real-only and generated")
    return parser.parse_args(argv), []


def parse_explore_options(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    """The exploration stage's options (the words after `explore`); --seeds caps its 3 seeds (1 with --smoke)."""
    parser = OneLineParser(prog=f"python -m study {EXPLORE}", description=EXPLORE_DESCRIPTION)
    _add_shared_options(parser, "the exploration's folder: its own, or the main study's of the same preset and data "
                        "seed, whose guidance network, GAN and pool it then reuses")
    return parser.parse_args(argv), []


CONDITION_NAMES = tuple(condition.name for condition in conditions())
OPT_IN_CONDITIONS = tuple(condition.name for condition in conditions() if not condition.by_default)


def _condition_list(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(","))
    unknown = [name for name in names if name not in CONDITION_NAMES]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown condition {unknown[0]!r} (choose from {','.join(CONDITION_NAMES)})")
    return names


def study(options: argparse.Namespace, messages: list[str] = ()) -> dict:
    preset = smoke(PRESETS[options.preset]) if options.smoke else PRESETS[options.preset]
    if options.seeds is not None:
        preset = replace(preset, main_seeds=min(preset.main_seeds, options.seeds),
                         other_seeds=min(preset.other_seeds, options.seeds))
    out = options.out
    preset = folder_preset(preset, out, options.smoke, options.data_seed)
    clock = StudyClock(out)
    data = build_data(preset, out, options.data_seed)
    plan = trainings(preset, out, data, options.data_seed, options.conditions)
    run_plan(plan, options.jobs, clock)
    results, counts = condition_results(plan, data)
    judge = next(training for training in plan if training.name == "judge")
    pools_dir = out / "pools"
    config = {"preset": asdict(preset), "data_seed": options.data_seed, "amp": preset.amp,
              "conditions": {c.name: c.summary for c in conditions(preset.main_dose, preset.dose_fractions)},
              "trainings": [{"name": t.name, "argv": list(t.argv), "minutes": step_minutes(t)} for t in plan]}
    report = build_report(results, counts, faithfulness(judge, data.train, pools_dir), overfitting(plan),
                          plain(config), clock.minutes())
    write_report(out, report, pose_pictures(data.train, pools_dir, out))
    print(f"verdict: {report['verdict']['summary']}; {out / 'study.html'}")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m study [explore] ...` (exit codes: common.training.cli): the main study, or with the
    first word `explore` the exploration stage."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == [EXPLORE]:
        from study.explore import explore

        return run_script(f"python -m study {EXPLORE}", parse_explore_options, explore, argv[1:], errors=(StudyError,))
    return run_script("python -m study", parse_options, study, argv, errors=(StudyError,))


if __name__ == "__main__":
    sys.exit(main())
