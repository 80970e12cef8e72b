"""The study's statistics and verdict rule, fixed before any number is seen (stated on the
study's page above every number).

Every condition trains with the same training seeds as `real-only` (a seed fixes the initial
weights, the real data order and the generated variants drawn), so each seed gives one
paired difference:

    d_s = metric(condition, seed s) - metric(real-only, seed s)      over the shared seeds
    difference = mean(d_s)
    ci95 = difference -+ t(0.975, n - 1) * sd(d_s) / sqrt(n)         (Student t, n >= 2)
    "helps"                    when ci95 lies above 0
    "hurts"                    when ci95 lies below 0
    "no measurable difference" otherwise (and with fewer than 2 shared seeds)

The primary comparison, named before the run: `generated` (frames of the GAN in new arm
poses, added to the real ones) against `real-only` on the arms in new poses
(`new_pose_arms.pckt_arms`). Pose augmentation "helps" when that verdict is "helps" and the
narrow held-out set (the training families) does not say "hurts" for all keypoints: a gain on
new poses must not cost the poses trained on. Every other comparison is secondary.
"""

from __future__ import annotations

import math
from statistics import fmean, stdev
from typing import Sequence

from scipy import stats

BASELINE = "real-only"
PRIMARY_CONDITION = "generated"
PRIMARY_METRIC = "new_pose_arms.pckt_arms"
GUARD_METRIC = "narrow.pckt"  # a gain must not cost the training families
HELD_OUT = ("wide", "new_pose_arms", "narrow")
METRICS = ("pckt", "pckt_arms", "seatbelt_iou")
RULE = ("paired over the training seeds: the difference of each condition to real-only, seed by seed; its mean and "
        "a 95 % Student-t interval over the per-seed differences; 'helps' when the interval lies above 0, 'hurts' "
        "when below, 'no measurable difference' otherwise. Primary comparison, named before the run: generated "
        "(new arm poses, added) against real-only on the arms in new poses (new_pose_arms PCKt@0.2 of elbows and "
        "wrists); pose augmentation helps when that says 'helps' and the narrow held-out set's PCKt does not say "
        "'hurts'. Everything else is secondary.")


def paired(condition: Sequence[float | None], baseline: Sequence[float | None]) -> dict:
    """The rule for one metric over seed-aligned values (None or NaN where a seed has no value):
    {'difference', 'ci95': [low, high], 'seeds', 'verdict'} (NaN/None difference without pairs)."""
    differences = [c - b for c, b in zip(condition, baseline)
                   if c is not None and b is not None and math.isfinite(c) and math.isfinite(b)]
    n = len(differences)
    if n == 0:
        return {"difference": math.nan, "ci95": [math.nan, math.nan], "seeds": 0, "verdict": "no measurable difference"}
    mean = fmean(differences)
    if n < 2:
        return {"difference": mean, "ci95": [math.nan, math.nan], "seeds": 1, "verdict": "no measurable difference"}
    half = float(stats.t.ppf(0.975, n - 1)) * stdev(differences) / math.sqrt(n)
    low, high = mean - half, mean + half
    verdict = "helps" if low > 0 else "hurts" if high < 0 else "no measurable difference"
    return {"difference": mean, "ci95": [low, high], "seeds": n, "verdict": verdict}


def _aligned(results: dict, seeds: Sequence[int], held_out: str, metric: str) -> list[float | None]:
    by_seed = dict(zip(results["seeds"], results[held_out][metric]))
    return [by_seed.get(seed) for seed in seeds]


def paired_table(conditions: dict[str, dict], baseline_name: str = BASELINE,
                 sets: Sequence[str] = HELD_OUT) -> dict[str, dict]:
    """{condition: {'<set>.<metric>': paired(...)}} against `baseline_name` (real-only) for every
    other condition, over the sets (or subsets) `sets` (the held-out sets).

    conditions: {name: {'seeds': [...], set: {metric: [one value per seed]}}}, as in study.json.
    """
    if baseline_name not in conditions:
        return {}
    baseline = conditions[baseline_name]
    table = {}
    for name, results in conditions.items():
        if name == baseline_name:
            continue
        seeds = [seed for seed in results["seeds"] if seed in baseline["seeds"]]
        table[name] = {f"{held}.{metric}": paired(_aligned(results, seeds, held, metric),
                                                  _aligned(baseline, seeds, held, metric))
                       for held in sets if held in results for metric in METRICS if metric in results[held]}
    return table


def oracle_share(table: dict[str, dict], condition: str = PRIMARY_CONDITION, metric: str = PRIMARY_METRIC) -> float:
    """The condition's gain over real-only as a fraction of the oracle's (NaN when the oracle
    gained nothing: there is no gain to share)."""
    oracle = table.get("oracle", {}).get(metric, {}).get("difference", math.nan)
    gain = table.get(condition, {}).get(metric, {}).get("difference", math.nan)
    if not (math.isfinite(oracle) and math.isfinite(gain)) or oracle <= 0:
        return math.nan
    return gain / oracle


def summary(table: dict[str, dict]) -> str:
    """One sentence: what the primary comparison says, with the ceiling beside it."""
    primary = table.get(PRIMARY_CONDITION, {}).get(PRIMARY_METRIC)
    if primary is None:
        return "no primary comparison (the generated condition did not run)"
    guard = table[PRIMARY_CONDITION].get(GUARD_METRIC, {"verdict": "no measurable difference"})
    oracle = table.get("oracle", {}).get(PRIMARY_METRIC)
    ceiling = "" if oracle is None else (f"; the perfect generator (oracle): {oracle['verdict']} "
                                          f"({_signed(oracle)})")
    said = f"{primary['verdict']} ({_signed(primary)})"
    if primary["verdict"] == "helps" and guard["verdict"] == "hurts":
        return (f"no: generated frames in new poses gain on new-pose arms, {said}, but cost the training families "
                f"({_signed(guard)} PCKt on narrow){ceiling}")
    answer = {"helps": "yes", "hurts": "no, it hurts", "no measurable difference": "no measurable difference"}
    return f"{answer[primary['verdict']]}: generated frames in new poses against real-only on new-pose arms, {said}{ceiling}"


def _signed(result: dict) -> str:
    low, high = result["ci95"]
    interval = "" if not (math.isfinite(low) and math.isfinite(high)) else f", 95 % CI [{low:+.3f}, {high:+.3f}]"
    return f"{result['difference']:+.3f}{interval}, {result['seeds']} seeds"
