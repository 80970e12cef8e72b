"""The study's verdict rule, fixed before any number is seen (stated on the study's page).

For each generated condition against `real-only`, on the `wide` held-out set, for all
keypoints (PCKt@0.2) and for the arms (PCKt@0.2 of elbows and wrists):

    difference = mean over seeds (condition) - mean over seeds (real-only)
    spread     = the larger of the two conditions' spreads (max - min over seeds)
    "helps"                    when difference >  2 x spread
    "hurts"                    when difference < -2 x spread
    "no measurable difference" otherwise

With a single seed the spread is 0 and any difference decides: the presets run 2 or more.
"""

from __future__ import annotations

from statistics import fmean
from typing import Sequence

RULE = ("for each generated condition against real-only on the wide held-out set (all keypoints and arms): "
        "'helps' when the difference of the means exceeds twice the larger spread (max - min over seeds) of the "
        "two, 'hurts' when it is below minus that, 'no measurable difference' otherwise")
BASELINE = "real-only"
METRICS = ("pckt", "pckt_arms")


def spread(values: Sequence[float]) -> float:
    return max(values) - min(values)


def compare(condition: Sequence[float], baseline: Sequence[float]) -> dict:
    """The rule for one metric: {'difference', 'spread', 'verdict'}."""
    difference = fmean(condition) - fmean(baseline)
    larger_spread = max(spread(condition), spread(baseline))
    if difference > 2 * larger_spread:
        verdict = "helps"
    elif difference < -2 * larger_spread:
        verdict = "hurts"
    else:
        verdict = "no measurable difference"
    return {"difference": difference, "spread": larger_spread, "verdict": verdict}


def verdicts(conditions: dict[str, dict], held_out: str = "wide") -> dict[str, dict]:
    """{condition: {metric: compare(...)}} for every condition but the baseline.

    conditions: {name: {held_out: {metric: [one value per seed]}}}, as in study.json.
    """
    baseline = conditions[BASELINE][held_out]
    return {name: {metric: compare(results[held_out][metric], baseline[metric]) for metric in METRICS}
            for name, results in conditions.items() if name != BASELINE}


def summary(per_condition: dict[str, dict]) -> str:
    """One sentence: what the numbers say about pose augmentation."""
    said = {(name, metric): result["verdict"] for name, metrics in per_condition.items() for metric, result in metrics.items()}
    helps = sorted({name for (name, _), verdict in said.items() if verdict == "helps"})
    hurts = sorted({name for (name, _), verdict in said.items() if verdict == "hurts"})
    if helps and not hurts:
        return f"pose augmentation helps on the wide held-out set ({', '.join(helps)})"
    if hurts and not helps:
        return f"pose augmentation hurts on the wide held-out set ({', '.join(hurts)})"
    if helps and hurts:
        return f"mixed: helps for {', '.join(helps)}, hurts for {', '.join(hurts)} on the wide held-out set"
    return "no measurable difference between real-only training and any generated condition on the wide held-out set"
