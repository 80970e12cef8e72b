"""Running the study's trainings: each at most once, resumable, with one progress line.

Every training runs in this process through its script's `main` (no start-up cost per run),
its output going to `<its folder>/output.log`. A finished training leaves `done.json`; a study
that was stopped (Ctrl-C, a kill, a crash) continues with the same command: finished trainings
are kept, an unfinished one continues from its last save (`--continue-train`). While a training
runs, a background thread keeps one line up to date: which training, which epoch, and about how
long the whole study still needs (from the iterations planned and the speed measured so far).
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
from typing import Callable

from common.errors import CheckpointError
from common.files import write_text_atomic
from common.stopping import TrainingInterrupted
from study.plan import Training

DONE = "done.json"


class StudyError(RuntimeError):
    """A training of the study failed; the message names it and its log."""


def is_done(training: Training) -> bool:
    return (training.directory / DONE).is_file()


def _script_main(script: str) -> Callable[[list[str]], int]:
    if script == "gan":
        from gan.train import main
    else:
        from nadsnet_pvt.train import main
    return main


def _epochs_done(training: Training) -> int:
    """Epochs finished so far, read off the training's files (no coupling to its internals)."""
    if training.script == "nadsnet":
        metrics = training.directory / "nadsnet_metrics.jsonl"
        return len(metrics.read_text().splitlines()) if metrics.is_file() else 0
    record = training.directory / "iter.txt"
    try:
        return int(record.read_text().split()[0]) - 1 if record.is_file() else 0
    except (ValueError, IndexError):
        return 0


class Progress:
    """The study's progress line (stderr), refreshed every few seconds from another thread."""

    def __init__(self, trainings: list[Training], stream=None):
        self.trainings = trainings
        self.stream = stream or sys.stderr
        self.started = time.time()
        self.iterations_done = sum(t.iterations for t in trainings if is_done(t))
        self.iterations_at_start = self.iterations_done
        self.current: Training | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def line(self) -> str:
        if self.current is None:
            return ""
        index = self.trainings.index(self.current) + 1
        done_now = self.iterations_done - self.iterations_at_start
        total = sum(t.iterations for t in self.trainings)
        elapsed = time.time() - self.started
        left = "estimating time left" if done_now == 0 else \
            f"about {(total - self.iterations_done) * elapsed / done_now / 60:.0f} min left"
        epoch = min(_epochs_done(self.current) + 1, self.current.epochs)
        return (f"study: training {index}/{len(self.trainings)} {self.current.name}, epoch {epoch}/{self.current.epochs}, "
                f"{left}")

    def _loop(self) -> None:
        while not self._stop.wait(5.0):
            self.stream.write("\r" + self.line()[:150].ljust(150))
            self.stream.flush()

    def start(self, training: Training) -> None:
        self.current = training
        self.stream.write("\r" + self.line()[:150].ljust(150) + "\n")
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()

    def finished(self, training: Training) -> None:
        self.iterations_done += training.iterations

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.stream.write("\n")


def run_training(training: Training, progress: Progress) -> None:
    """Run (or continue) one training to the end, its output in `output.log`; then mark it done."""
    progress.start(training)
    training.directory.mkdir(parents=True, exist_ok=True)
    state = "gan_train_state.pth" if training.script == "gan" else "nadsnet_train_state.pth"
    argv = [*training.argv, *(["--continue-train"] if (training.directory / state).is_file() else [])]
    log_path = training.directory / "output.log"
    with open(log_path, "a", encoding="utf-8") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        print(f"\n$ {training.script} {' '.join(argv)}", flush=True)
        code = _script_main(training.script)(argv)
    if code in (130, 143):
        raise TrainingInterrupted(code - 128, f"stopped during {training.name}; continue with the same command")
    if code != 0:
        last = [line for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
        raise StudyError(f"training {training.name} failed (exit code {code}): {last[-1] if last else ''} "
                         f"(log: {log_path})")
    write_text_atomic(json.dumps({"name": training.name, "argv": list(training.argv)}) + "\n", training.directory / DONE)
    progress.finished(training)


def check_resumable(trainings: list[Training]) -> None:
    """A study folder from another preset or version would mix runs: refuse it."""
    for training in trainings:
        done = training.directory / DONE
        if done.is_file():
            recorded = json.loads(done.read_text())
            if recorded.get("argv") != list(training.argv):
                raise CheckpointError(f"{done}: this training was run with other flags (another --preset or "
                                      "version of the study); use another --out")
