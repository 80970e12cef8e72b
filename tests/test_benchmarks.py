"""`python -m benchmarks` end to end at tiny sizes (random weights everywhere; nothing downloaded).

One subprocess runs all four benchmarks (the imports of torch and the models dominate a run at
these sizes, so one process keeps the test to seconds) and must print one valid JSON line per
measurement with the required keys and sensible values.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REQUIRED = ("name", "median_s", "gflops", "gflops_per_s", "peak_memory_gb")


def run_benchmarks(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "benchmarks", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=check,
    )


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    result = run_benchmarks(
        "gan-iteration", "nadsnet-step", "data", "maps",
        "--size", "64", "--ngf", "2", "--batch", "1", "--iters", "1", "--workers", "0", "1", "--json",
    )
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert lines, result.stderr
    return [json.loads(line) for line in lines]  # every stdout line is JSON


def by_benchmark(rows: list[dict], name: str) -> list[dict]:
    return [row for row in rows if row["benchmark"] == name]


def test_every_row_has_the_required_keys_and_positive_values(rows):
    assert {row["benchmark"] for row in rows} == {"gan-iteration", "nadsnet-step", "data", "maps"}
    for row in rows:
        for key in REQUIRED:
            assert key in row, (row["name"], key)
        assert row["median_s"] > 0 and row["peak_memory_gb"] > 0, row["name"]
        if row["gflops"] is not None:
            assert row["gflops"] > 0 and row["gflops_per_s"] > 0, row["name"]


def test_gan_iteration_counts_both_steps_with_every_loss(rows):
    (row,) = by_benchmark(rows, "gan-iteration")
    assert row["gflops"] == pytest.approx(row["gflops_generator_step"] + row["gflops_discriminator_step"])
    # The G step (G forward + backward and every branch) costs more than the D step.
    assert row["gflops_generator_step"] > row["gflops_discriminator_step"] > 0
    assert row["losses"] == sorted(["GAN", "GAN_Feat", "VGG", "heatmap", "paf", "seatbelt"])
    assert (row["size"], row["ngf"], row["batch"], row["reuse_fake"]) == (64, 2, 1, False)


def test_nadsnet_step_and_data_rows(rows):
    (step,) = by_benchmark(rows, "nadsnet-step")
    assert step["gflops"] > 0 and step["batch"] == 1 and step["gan_fraction"] == 0.5
    data = by_benchmark(rows, "data")
    assert [row["workers"] for row in data] == [0, 1]
    assert all(row["samples_per_s"] > 0 and row["gflops"] is None for row in data)
    assert len(by_benchmark(rows, "maps")) >= 4


def test_the_cpu_preset_runs_the_quick_starts_configuration_and_profiles_by_precision():
    result = run_benchmarks("gan-iteration", "nadsnet-step", "--preset", "cpu", "--iters", "1", "--amp", "bf16",
                            "--threads", "1", "--profile", "--json")
    gan, step = (json.loads(line) for line in result.stdout.splitlines() if line.strip())
    assert (gan["size"], gan["ngf"], gan["ndf"], gan["spade_hidden"], gan["batch"]) == (64, 16, 16, 32, 4)
    assert gan["losses"] == ["GAN", "GAN_Feat", "L1"] and gan["amp"] == "bf16" and gan["preset"] == "cpu"
    assert (step["size"], step["fpn_channels"], step["head_channels"], step["optimizer"]) == (128, 64, 32, "adamw")
    assert (step["ngf"], step["generator_size"], step["gan_fraction"], step["batch"]) == (16, 64, 0.25, 4)
    for row in (gan, step):
        seconds = row["profile"]["seconds_by_precision"]
        assert seconds["bfloat16"] > 0 and seconds["float32"] > 0  # convolutions in bf16; losses, optimiser in float32
        top = row["profile"]["top"]
        assert len(top) > 5 and all(entry[2] >= later[2] for entry, later in zip(top, top[1:]))
        assert any(name == "convolution" and precision == "bfloat16" for name, precision, _, _ in top)


def test_fp16_on_the_cpu_is_refused_clearly():
    result = run_benchmarks("gan-iteration", "--size", "64", "--amp", "fp16", "--device", "cpu", check=False)
    assert result.returncode == 2
    assert "--amp fp16: fp16 needs CUDA" in result.stderr and "bf16" in result.stderr
    assert result.stdout == ""


def test_page_benchmark_cost_and_disk_stay_flat():
    """`page`: the cost of a display step does not grow with the run (a small run here;
    docs/performance.md gives the 5,000-step figures), and the pictures left and the state stay bounded."""
    result = run_benchmarks("page", "--steps", "300", "--steps-per-epoch", "50", "--size", "64", "--json")
    row = json.loads(result.stdout.strip().splitlines()[-1])
    assert row["name"] == "page" and row["steps"] == 300
    assert row["images_left"] <= 3 * (12 + 6)  # 12 recent entries + one per epoch, 3 pictures each
    assert row["first_write_s"] > 0 and row["last_write_s"] > 0 and row["mean_step_s"] > 0


def test_gpu_check_runs_its_cpu_mode():
    """The GPU check script, in the mode CI can run: the same code paths at tiny sizes."""
    result = run_benchmarks("gpu-check", "--device", "cpu", "--json")
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    names = [row["name"] for row in rows]
    assert sum(name.startswith("gan-iteration") for name in names) == 2  # fp32 and bf16 (fp16 needs CUDA)
    assert any(name.startswith("nadsnet-step") for name in names)
    trainings = [row for row in rows if "iterations, page on" in row["name"]]
    assert len(trainings) == 2 and all(row["ok"] for row in trainings), trainings
    torchrun_row = next(row for row in rows if row["name"].startswith("torchrun"))
    assert torchrun_row["ok"] and torchrun_row["backend"] == "gloo", torchrun_row
