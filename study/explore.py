"""The exploration stage: which lever gives the generator its best chance, judged on the
training side only, so that the winner can be pinned into the main preset without tuning on
the held-out sets (`python -m study explore`, docs/study.md "The exploration stage").

Data: the main study's training set and pose library, and a validation set of its own,
`explore_valid` (every arm family, the preset's held-out size and frame size, its seed drawn
from --data-seed like every set of the training side). The held-out sets (narrow, wide) and the
judge's frames are never built nor read here.

Arms, each NADS-Net trained as the main study's conditions are, seeds 1..3 (--seeds caps them;
1 with --smoke): `real-only` and `generated` (the main preset's GAN and pool), and one per
lever, `generated` drawing from the lever's pool:

- gan-<S>px: the GAN trained at NADS-Net's input size S (--image-size S) instead of the preset's
  smaller size, whose frames are resized up (not run where the preset's GAN already trains at S);
- gan-longer: the GAN trained twice as many epochs (--niter and --niter-decay doubled);
- occluded-omitted: the GAN's input leaves out the joints labelled occluded and the limbs
  touching them (train_gan.py --occluded-joints omitted), in training and in its pool;
- filtered: the preset GAN's pool with only the frames whose changed arms the guidance network
  reads (study.pool_filter, threshold FILTER_THRESHOLD).

Every lever's pool renders the same poses as the preset's (the same arm draws, --seed = the
data seed). Each final network is evaluated on explore_valid (study.report.results_on_sets):
all keypoints, the new-pose arms (elbows and wrists of front-row people in families absent from
training) and the trained-family arms, and paired seed by seed (study.verdict.paired) with
`generated` and with `real-only`. The winner: the lever with the largest paired gain over
`generated` on new-pose arms PCKt@0.2 whose 95 % interval lies above 0, else "none". Pinning it
into the preset is left to a person.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Sequence

from common.posedata.visualize import write_page
from common.presets import GAN_IMAGE_SIZE, NADSNET_IMAGE_SIZE
from nadsnet_pvt.run_files import BEST_WEIGHTS
from study.plan import (BASELINE, NARROW_FAMILIES, POOL_AUGMENT, PRESETS, DataSet, StudyPreset, StudySteps, Training,
                        conditions, flag_value, smoke, synthetic_set, training_sets)
from study.pool_filter import DEFAULT_THRESHOLD as FILTER_THRESHOLD
from study.pools import new_pose_arm_masks, subset_of, trained_family_arm_masks
from study.report import dataset_of, plain, results_on_sets, table_rows, versions, write_json
from study.runner import StudyClock, folder_preset, run_plan, step_minutes
from study.verdict import paired_table

EXPLORE_SEEDS, SMOKE_SEEDS = 3, 1
GENERATED = "generated"  # the baseline generator every lever is compared with
VALID_SET = "explore_valid"  # its key in study.plan.SET_SEED_OFFSETS
SUBSETS = ("new_pose_arms", "trained_family_arms")
WINNER_METRIC = "new_pose_arms.pckt_arms"
RUN_PREFIX = "explore-"  # the arms' training folders, apart from the main study's conditions
# (real-only's first seed there also draws the overfitting curve on a held-out set, so it is
# trained again here; generated is trained exactly as the main study's and shares its folders)
WINNER_RULE = ("paired over the training seeds on explore_valid (the training side's validation set of every family): "
               "the winner is the lever with the largest mean gain over generated (the preset's GAN) on the new-pose "
               "arms' PCKt@0.2 whose 95 % Student-t interval lies above 0; 'none' when no lever's does")
PINNING = ("pinning the winner into the main preset (study.plan.PRESETS) is left to a person: the main study's "
           "verdict then runs on the held-out sets, which nothing here has looked at")
COLUMNS = (("new_pose_arms", "pckt_arms"), (VALID_SET, "pckt"), ("trained_family_arms", "pckt_arms"))
COLUMN_TITLES = "new-pose arms PCKt | all keypoints PCKt | trained-family arms PCKt"


@dataclass(frozen=True)
class Lever:
    """One way the generator might do better: train_gan.py flags over the preset's (a GAN of its
    own and its pool), or the preset's pool filtered by the guidance network."""

    name: str
    summary: str
    gan_flags: tuple[str, ...] = ()
    filtered: bool = False


@dataclass(frozen=True)
class ExploreData:
    """The sets the exploration stage reads: the training side's, and nothing held out."""

    train: DataSet
    poses: DataSet
    valid: DataSet  # explore_valid: its validation file only


def _input_size(flags: tuple[str, ...], sizes: dict[str, int]) -> int:
    """The --image-size a script runs at with `flags` (else its --preset's, the seed's by default)."""
    return int(flag_value(flags, "--image-size", str(sizes[flag_value(flags, "--preset", "seed")])))


def levers(preset: StudyPreset) -> tuple[list[Lever], dict[str, str]]:
    """The levers run for `preset`, and {name: why not} for those that would repeat its GAN."""
    nadsnet_size = _input_size(preset.nadsnet_flags, NADSNET_IMAGE_SIZE)
    gan_size = _input_size(preset.gan_flags, GAN_IMAGE_SIZE)
    niter, decay = (int(flag_value(preset.gan_flags, flag, default)) for flag, default in
                    (("--niter", "1"), ("--niter-decay", "0")))
    resolution = Lever(f"gan-{nadsnet_size}px", f"the GAN trained at NADS-Net's input size, {nadsnet_size} px, instead "
                       f"of {gan_size} px (whose frames are resized up to {nadsnet_size} px)",
                       ("--image-size", str(nadsnet_size)))
    found = [
        resolution,
        Lever("gan-longer", f"the GAN trained twice as many epochs ({2 * (niter + decay)} instead of {niter + decay})",
              ("--niter", str(2 * niter), "--niter-decay", str(2 * decay))),
        Lever("occluded-omitted", "the GAN's input leaves out the joints labelled occluded and the limbs touching them, "
              "in training and in its pool", ("--occluded-joints", "omitted")),
        Lever("filtered", f"the preset GAN's pool with only the frames whose changed elbows and wrists the guidance "
              f"network finds (PCKt@0.2 >= {FILTER_THRESHOLD:g}; a source frame left without any keeps its best)",
              filtered=True),
    ]
    if nadsnet_size == gan_size:
        return found[1:], {resolution.name: f"the preset's GAN already trains at NADS-Net's {gan_size} px"}
    return found, {}


def explore_preset(name: str, smoke_run: bool) -> StudyPreset:
    """The preset the stage runs: the main one, or with --smoke study.plan.smoke's with its GAN at
    32 px, half NADS-Net's 64 px as the cpu preset's is half its 128, so that the resolution
    lever trains a GAN of its own there too."""
    if not smoke_run:
        return PRESETS[name]
    tiny = smoke(PRESETS[name])
    return replace(tiny, gan_flags=(*tiny.gan_flags, "--image-size", "32"))


def explore_data(preset: StudyPreset, out: Path, data_seed: int) -> ExploreData:
    """The training set, the pose library (the main study's) and explore_valid, built once under DIR/data."""
    train, poses = training_sets(preset, out, data_seed)
    valid = synthetic_set(preset, out, data_seed, 0, preset.held_out_frames, VALID_SET, VALID_SET, None)
    return ExploreData(train, poses, valid)


def _filter_step(steps: StudySteps, guidance: Training, name: str) -> Training:
    """The preset GAN's pool filtered by `guidance` (study.pool_filter) into pools/`name`."""
    out = steps.pools_dir / name
    argv = ("--pool", str(steps.pools_dir / "gan"), "--source-set", str(steps.train.root),
            "--guidance", str(guidance.directory / BEST_WEIGHTS), "--threshold", f"{FILTER_THRESHOLD:g}",
            "--out", str(out))
    return Training(f"pool-{name}", "filter", steps.runs_dir / f"pool-{name}", argv, 0, output=out)


def explore_trainings(preset: StudyPreset, out: Path, data: ExploreData, data_seed: int, seeds: int,
                      chosen: Sequence[Lever]) -> list[Training]:
    """The stage's steps in the order they run: the guidance network, the preset's GAN and pool
    (the main study's steps, so its folder's are reused), each lever's GAN and pool (or the
    filter), then every arm's NADS-Net for seeds 1..`seeds` (generated's are the main study's
    generated-seed<s>)."""
    steps = StudySteps(preset, out, data.train, data.poses, data_seed)
    guidance = steps.guidance()
    gan = steps.gan("gan", guidance)
    plan = [guidance, gan, steps.pool("gan", gan, POOL_AUGMENT, preset.variants)]
    by_name = {condition.name: condition for condition in conditions(preset.main_dose, preset.dose_fractions)}
    arms = [by_name[BASELINE], by_name[GENERATED]]
    for lever in chosen:
        pool = f"lever-{lever.name}"
        if lever.filtered:
            plan.append(_filter_step(steps, guidance, pool))
        else:
            lever_gan = steps.gan(pool, guidance, lever.gan_flags)
            plan += [lever_gan, steps.pool(pool, lever_gan, POOL_AUGMENT, preset.variants)]
        arms.append(replace(by_name[GENERATED], name=lever.name, pool=pool, summary=lever.summary))
    for arm in arms:  # generated is the main study's condition itself: in its folder, its runs are reused
        plan += steps.condition_runs(arm, seeds, gan, prefix="" if arm.name == GENERATED else RUN_PREFIX)
    return plan


def explore_results(plan: list[Training], data: ExploreData) -> tuple[dict[str, dict], dict]:
    """Every arm's final networks on explore_valid: ({arm: {'seeds', 'explore_valid',
    'new_pose_arms', 'trained_family_arms': {metric: [one per seed]}}}, keypoint counts)."""

    def validation_sets(image_size: int) -> dict[str, tuple]:
        valid = dataset_of(data.valid.annotations, image_size)
        return {VALID_SET: (valid, {"new_pose_arms": subset_of(new_pose_arm_masks(valid, NARROW_FAMILIES)),
                                    "trained_family_arms": subset_of(trained_family_arm_masks(valid, NARROW_FAMILIES))})}

    return results_on_sets(plan, validation_sets)


def winner(vs_generated: dict[str, dict], names: Sequence[str]) -> str:
    """The lever of `names` with the largest paired gain over generated on new-pose arms among
    those whose interval lies above 0 ('helps'), or 'none'."""
    gains = {name: vs_generated[name][WINNER_METRIC]["difference"] for name in names
             if vs_generated.get(name, {}).get(WINNER_METRIC, {}).get("verdict") == "helps"}
    return max(gains, key=gains.get) if gains else "none"


def explore_report(results: dict, counts: dict, chosen: Sequence[Lever], skipped: dict, config: dict,
                   minutes: float) -> dict:
    """What explore.json holds: per lever its summary, seeds, per-seed values and the paired
    comparisons with generated and real-only; the baselines; the winner and its rule."""
    sets = (VALID_SET, *SUBSETS)
    vs_generated, vs_real = paired_table(results, GENERATED, sets), paired_table(results, BASELINE, sets)
    found = {lever.name: {"summary": lever.summary, **results[lever.name],
                          "paired": {GENERATED: vs_generated[lever.name], BASELINE: vs_real[lever.name]}}
             for lever in chosen}
    baselines = {BASELINE: results[BASELINE], GENERATED: {**results[GENERATED], "paired": {BASELINE: vs_real[GENERATED]}}}
    return {"rule": WINNER_RULE, "winner": winner(vs_generated, [lever.name for lever in chosen]), "pinning": PINNING,
            "levers": found, "baselines": baselines, "not_applicable": skipped, "evaluated_keypoints": counts,
            "config": config, "versions": versions(), "minutes": minutes}


def winner_line(report: dict) -> str:
    """One line: the winner with its gain over generated, or why there is none."""
    name = report["winner"]
    if name == "none":
        return ("winner: none (no lever's paired gain over generated on new-pose arms PCKt@0.2 has its 95 % interval "
                "above 0)")
    pair = report["levers"][name]["paired"][GENERATED][WINNER_METRIC]
    low, high = pair["ci95"]
    return (f"winner: {name} ({pair['difference']:+.3f} [{low:+.3f}, {high:+.3f}] over generated on new-pose arms "
            f"PCKt@0.2, {pair['seeds']} seeds); pinning it into the preset is left to a person")


def write_explore(out: Path, report: dict) -> None:
    """DIR/explore.json and DIR/explore.html (the rule, the winner, the table of every arm)."""
    write_json(report, out / "explore.json")
    arms = {**report["baselines"], **report["levers"]}
    paired = {name: entry.get("paired", {}) for name, entry in arms.items()}
    notes = [f"rule (fixed before any number): {report['rule']}", winner_line(report), PINNING,
             f"arm                  seeds | {COLUMN_TITLES}   (mean, paired difference to generated [95 % CI] verdict)",
             *table_rows(arms, {name: pair.get(GENERATED, {}) for name, pair in paired.items()}, COLUMNS),
             f"arm                  seeds | {COLUMN_TITLES}   (mean, paired difference to real-only [95 % CI] verdict)",
             *table_rows(arms, {name: pair.get(BASELINE, {}) for name, pair in paired.items()}, COLUMNS),
             *(f"{name}: not run ({why})" for name, why in report["not_applicable"].items()),
             *(f"{name}: {entry['summary']}" for name, entry in report["levers"].items()),
             f"{report['minutes']:.0f} minutes"]
    write_page(out / "explore.html", "Which lever gives the generator its best chance? (training side only)", [],
               notes=notes)


def explore(options: argparse.Namespace, messages: Sequence[str] = ()) -> dict:
    """The whole stage (see the module docstring): build, train (resumable), evaluate, report."""
    out = options.out
    preset = folder_preset(explore_preset(options.preset, options.smoke), out, options.smoke, options.data_seed)
    seeds = min(SMOKE_SEEDS if options.smoke else EXPLORE_SEEDS, options.seeds or EXPLORE_SEEDS)
    clock = StudyClock(out, ".explore_minutes")
    data = explore_data(preset, out, options.data_seed)
    chosen, skipped = levers(preset)
    plan = explore_trainings(preset, out, data, options.data_seed, seeds, chosen)
    run_plan(plan, options.jobs, clock)
    results, counts = explore_results(plan, data)
    config = {"preset": asdict(preset), "data_seed": options.data_seed, "amp": preset.amp, "seeds": seeds,
              "data": {"train": data.train.root, "poses": data.poses.root, VALID_SET: data.valid.root},
              "trainings": [{"name": t.name, "argv": list(t.argv), "minutes": step_minutes(t)} for t in plan]}
    report = explore_report(results, counts, chosen, skipped, plain(config), clock.minutes())
    write_explore(out, report)
    print(f"{winner_line(report)}; {out / 'explore.html'}")
    return report
