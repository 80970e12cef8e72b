"""Running the study's trainings: each at most once, resumable, with one progress line.

Every training runs in this process through its script's `main` (no start-up cost per run),
its output going to `<its folder>/output.log`; with `--jobs N` the steps run N at a time
instead, each in a process of its own with an equal share of the cores, a step starting as soon
as the steps it reads are done (prerequisites, run_in_parallel): the judge and the conditions on
real frames alone do not wait for the GAN. A finished training leaves `done.json`; a study
that was stopped (Ctrl-C, a kill, a crash) continues with the same command: finished trainings
are kept, an unfinished one continues from its last save (`--continue-train`). While a training
runs, a background thread keeps one line up to date: which training, which epoch, and about how
long the whole study still needs (from the iterations planned and the speed measured so far).
The study's folder keeps its preset, data seed and precision (check_folder) and its minutes
(StudyClock); `run_plan` runs a whole plan (the main study's or the exploration stage's).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

from common.errors import CheckpointError, OptionError
from common.training.files import write_text_atomic
from common.training.stopping import STOP, TrainingInterrupted
from gan.run_files import STATE_FILE as GAN_STATE
from nadsnet_pvt.run_files import METRICS_FILE, STATE_FILE as NADSNET_STATE
from study.plan import StudyPreset, Training

DONE = "done.json"
ROOT = Path(__file__).resolve().parents[1]


class StudyError(RuntimeError):
    """A training of the study failed; the message names it and its log."""


def is_done(training: Training) -> bool:
    return (training.directory / DONE).is_file()


def _script_main(script: str) -> Callable[[list[str]], int]:
    if script == "gan":
        from gan.train import main
    elif script == "nadsnet":
        from nadsnet_pvt.train import main
    elif script == "generate":
        from gan.generation.commands import main
    elif script == "filter":
        from study.pool_filter import filter_main as main
    else:
        from study.pools import oracle_main as main
    return main


STATE_FILES = {"gan": GAN_STATE, "nadsnet": NADSNET_STATE}  # others restart or continue alone


def _epochs_done(training: Training) -> int:
    """Epochs finished so far, read off the training's files (no coupling to its internals)."""
    if training.script == "nadsnet":
        metrics = training.directory / METRICS_FILE
        return len(metrics.read_text().splitlines()) if metrics.is_file() else 0
    record = training.directory / "iter.txt"
    try:
        return int(record.read_text().split()[0]) - 1 if record.is_file() else 0
    except (ValueError, IndexError):
        return 0


def _iterations_in(training: Training, epochs: int) -> float:
    """The planned iterations of a training's first `epochs` epochs."""
    return training.iterations * min(epochs, training.epochs) / max(training.epochs, 1)


class Progress:
    """The study's progress line (stderr), refreshed every few seconds from another thread."""

    def __init__(self, trainings: list[Training], stream=None):
        self.trainings = trainings
        self.stream = stream or sys.stderr
        self.started = time.time()
        self.iterations_done = sum(t.iterations for t in trainings if is_done(t))
        self.iterations_at_start = self.iterations_done
        self.running: list[Training] = []
        self._epochs_at_start: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def line(self) -> str:
        if not self.running:
            return ""
        current = self.running[0]
        index = self.trainings.index(current) + 1
        # the running trainings' finished epochs count too, so that side-by-side runs finishing
        # together do not make the rate jump
        partly = {t.name: _iterations_in(t, _epochs_done(t)) for t in self.running}
        since_start = sum(partly[t.name] - _iterations_in(t, self._epochs_at_start.get(t.name, 0)) for t in self.running)
        done_now = self.iterations_done - self.iterations_at_start + since_start
        total = sum(t.iterations for t in self.trainings)
        elapsed = time.time() - self.started
        left = "estimating time left" if done_now <= 0 else \
            f"about {(total - self.iterations_done - sum(partly.values())) * elapsed / done_now / 60:.0f} min left"
        epoch = min(_epochs_done(current) + 1, current.epochs)
        others = f" (and {len(self.running) - 1} more)" if len(self.running) > 1 else ""
        return (f"study: training {index}/{len(self.trainings)} {current.name}, epoch {epoch}/{current.epochs}{others}, "
                f"{left}")

    def _loop(self) -> None:
        while not self._stop.wait(5.0):
            self.stream.write("\r" + self.line()[:150].ljust(150))
            self.stream.flush()

    def start(self, training: Training) -> None:
        self.running.append(training)
        self._epochs_at_start[training.name] = _epochs_done(training)  # a resumed training's earlier epochs
        self.stream.write("\r" + self.line()[:150].ljust(150) + "\n")
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()

    def finished(self, training: Training) -> None:
        self.iterations_done += training.iterations
        if training in self.running:
            self.running.remove(training)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.stream.write("\n")


def _arguments(training: Training) -> list[str]:
    """The training's arguments, continuing from its last save when it has one."""
    training.directory.mkdir(parents=True, exist_ok=True)
    state = STATE_FILES.get(training.script)
    resumable = state is not None and (training.directory / state).is_file()
    return [*training.argv, *(["--continue-train"] if resumable else [])]


def run_training(training: Training, progress: Progress) -> None:
    """Run (or continue) one training to the end, its output in `output.log`; then mark it done."""
    progress.start(training)
    argv, started = _arguments(training), time.monotonic()
    with open(training.directory / "output.log", "a", encoding="utf-8") as log, contextlib.redirect_stdout(log), \
            contextlib.redirect_stderr(log):
        print(f"\n$ {training.script} {' '.join(argv)}", flush=True)
        code = _script_main(training.script)(argv)
    _finish(training, code, progress, started, torch_threads())


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def step_minutes(training: Training) -> float | None:
    """The wall minutes a finished step took (its done mark; None for a mark without them)."""
    done = training.directory / DONE
    return json.loads(done.read_text()).get("minutes") if done.is_file() else None


def _finish(training: Training, code: int, progress: Progress, started: float, threads: int) -> None:
    """Mark a training that exited with `code` done (its wall minutes since `started`, a
    time.monotonic(), and its CPU threads kept in the mark), or raise: interrupted, or failed
    (naming its log)."""
    log_path = training.directory / "output.log"
    if code in (130, 143):
        raise TrainingInterrupted(code - 128, f"stopped during {training.name}; continue with the same command")
    if code != 0:
        last = [line for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
        raise StudyError(f"training {training.name} failed (exit code {code}): {last[-1] if last else ''} "
                         f"(log: {log_path})")
    mark = {"name": training.name, "argv": list(training.argv), "minutes": round((time.monotonic() - started) / 60, 3),
            "threads": threads}
    write_text_atomic(json.dumps(mark) + "\n", training.directory / DONE)
    progress.finished(training)


def _die_with_parent() -> None:
    """In a training's process, before it starts: a session of its own (a terminal's Ctrl-C
    reaches the study alone, which passes it on once), and SIGTERM when the study's process
    dies however it dies (Linux), so that no training goes on writing without it."""
    os.setsid()
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG


def _start(training: Training, threads: int) -> subprocess.Popen:
    argv = _arguments(training)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    with open(training.directory / "output.log", "a", encoding="utf-8") as log:
        log.write(f"\n$ {training.script} {' '.join(argv)}\n")
        log.flush()
        return subprocess.Popen([sys.executable, "-m", "study.runner", training.script, *argv], cwd=ROOT, env=env,
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                preexec_fn=_die_with_parent if os.name == "posix" else None)


def prerequisites(plan: list[Training]) -> dict[str, set[str]]:
    """{step name: the names of the earlier steps it reads}. A step reads another when one of
    its arguments is a path inside the other's folder or output folder (its weights, its
    generator, its pool of frames); only earlier steps count, so the plan's order stays one that
    works one step at a time."""
    found: dict[str, set[str]] = {}
    for index, step in enumerate(plan):
        homes = [(str(earlier.directory), earlier.name) for earlier in plan[:index]]
        homes += [(str(earlier.output), earlier.name) for earlier in plan[:index] if earlier.output is not None]
        found[step.name] = {name for home, name in homes
                            for argument in step.argv if argument == home or argument.startswith(home + os.sep)}
    return found


def _next_ready(pending: list[Training], needs: dict[str, set[str]], done: set[str]) -> Training | None:
    """The first pending step whose prerequisites are all done, or None."""
    return next((step for step in pending if needs.get(step.name, set()) <= done), None)


def run_in_parallel(trainings: list[Training], progress: Progress, jobs: int,
                    on_finished: Callable[[], None] = lambda: None) -> None:
    """Run the steps not yet done `jobs` at a time, each in its own process with cores // jobs
    threads: the first pending step (in plan order) whose prerequisites are done starts when a
    place is free. A stop request is passed on to every running step (each saves and ends); a
    failed step stops the others the same way, then the study says which. `on_finished` is
    called after each step is marked done."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = max(1, cores // jobs)
    needs = prerequisites(trainings)
    done = {training.name for training in trainings if is_done(training)}
    pending = [training for training in trainings if training.name not in done]
    running: list[tuple[Training, subprocess.Popen]] = []
    started: dict[str, float] = {}
    passed_on = False
    try:
        while pending or running:
            while len(running) < jobs and STOP.requested is None:
                training = _next_ready(pending, needs, done)
                if training is None:
                    break
                pending.remove(training)
                progress.start(training)
                started[training.name] = time.monotonic()
                running.append((training, _start(training, threads)))
            if not running and STOP.requested is None:
                blocked = ", ".join(f"{t.name} (needs {', '.join(sorted(needs[t.name] - done))})" for t in pending)
                raise StudyError(f"no step can start: {blocked}")
            if STOP.requested is not None and not passed_on:
                passed_on = True
                for _, process in running:
                    process.send_signal(STOP.requested)
            if STOP.requested is not None and not running:
                raise TrainingInterrupted(STOP.requested, "stopped between trainings; continue with the same command")
            time.sleep(0.5)
            for entry in [entry for entry in running if entry[1].poll() is not None]:
                running.remove(entry)
                _finish(entry[0], entry[1].returncode, progress, started[entry[0].name], threads)
                done.add(entry[0].name)
                on_finished()
    finally:
        for _, process in running:  # after a failure or a second signal: stop the rest, saving
            if process.poll() is None and not passed_on:
                process.send_signal(signal.SIGINT)
        for _, process in running:
            process.wait()


# Flags that change only what a training writes besides its weights and metrics, so a step
# done with or without them still counts as done.
OUTPUT_ONLY_FLAGS = frozenset({"--no-html"})


def weights_argv(argv: list[str] | tuple[str, ...]) -> list[str]:
    """`argv` without OUTPUT_ONLY_FLAGS (each takes no value): what decides a step's results."""
    return [argument for argument in argv if argument not in OUTPUT_ONLY_FLAGS]


def check_resumable(trainings: list[Training]) -> None:
    """A study folder from another preset or version would mix runs: refuse it."""
    for training in trainings:
        done = training.directory / DONE
        if done.is_file():
            recorded = json.loads(done.read_text())
            if weights_argv(recorded.get("argv") or []) != weights_argv(training.argv):
                raise CheckpointError(f"{done}: this training was run with other flags (another --preset or "
                                      "version of the study); use another --out")


def run_plan(plan: list[Training], jobs: int, clock: "StudyClock") -> None:
    """Run every step of `plan` not done yet: in plan order in this process, or with `jobs` > 1
    `jobs` at a time as their prerequisites allow (run_in_parallel); `clock` records the
    minutes after each step."""
    check_resumable(plan)
    progress = Progress(plan)
    with STOP:
        try:
            if jobs > 1:
                run_in_parallel(plan, progress, jobs, on_finished=clock.record)
            else:
                for training in plan:
                    if not is_done(training):
                        run_training(training, progress)
                        clock.record()
        finally:
            progress.close()
            clock.record()


# --------------------------------------------------------------------------- the study's folder


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


def folder_preset(preset: StudyPreset, out: Path, smoke: bool, data_seed: int) -> StudyPreset:
    """`preset` with the precision of its folder `out` (chosen once, kept: check_folder), which
    the line printed first names; a folder of another preset or data seed is refused."""
    amp = check_folder(out, {"preset": preset.name, "smoke": bool(smoke), "data_seed": data_seed}, preset.amp)
    print(precision_line(amp))
    return replace(preset, amp=amp)


def resolve_study_amp(amp: str) -> str:
    from common.parallel.devices import cpu_bf16_supported

    if amp != "auto":
        return amp
    return "bf16" if cpu_bf16_supported() else "off"


class StudyClock:
    """Minutes the study has run, over every invocation (a stopped study continues), kept in the
    file `record` under its folder (the exploration stage keeps its own)."""

    def __init__(self, out: Path, record: str = ".minutes"):
        self.path = out / record
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



if __name__ == "__main__":  # one training in a process of its own: python -m study.runner SCRIPT ARGS...
    STOP.install()
    sys.exit(_script_main(sys.argv[1])(sys.argv[2:]))
