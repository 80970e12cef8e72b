"""The run skeleton both trainings share: everything a run needs besides the training itself.

A training loop reads (gan/train.py, nadsnet_pvt/train.py):

    run = Run(options, RUN_KIND, messages)       # log, stop requests, devices
    ... build data and networks (nothing written yet) ...
    with run.session(checkpoint, epochs):        # resume, folder lock; a clean end on a stop
        for epoch in run.epochs():
            for batch in run.batches(loader):    # bar, data order, stop requests, saves when due
                with run.step():                 # counts it; a non-finite loss stops or skips it
                    losses = trainer.step(batch)
                    run.record(losses)           # epoch means, printed every --print-freq
            run.end_epoch(save=...)              # the state (and the checkpoint's files) saved

What this module decides, once for both trainings:
- Files. Nothing is written before the data, options and checkpoints have been checked; then
  the run takes the folder's lock (common.training.run_folder). The log, the options file and the
  metrics file are held in memory until the first save, so a run stopped before its first
  iteration leaves nothing behind. Every file is written atomically; the logs and the metrics
  file are cut back on resume to the sizes saved with the state.
- Saves. The state (`spec.state_file`) holds the checkpoint's parts (networks, optimisers, ...),
  the progress, the RNG states, the cut-back sizes, the options a continued run must share, the
  provenance and a format version; it is loaded with `weights_only=True`. It is saved every
  `--save-latest-freq` iterations, when the training says so at an epoch end, on a stop
  request and at `--max-iterations`.
- Stop requests (common.training.stopping): the iteration in progress finishes, the state is saved and
  `TrainingInterrupted` ends the run with 128 + the signal number; before the first iteration
  nothing is written.
- Non-finite losses: the trainers raise NonFiniteLossError before any update (buffers put
  back); `--on-nonfinite stop` ends the run without saving, `skip` drops the batch with a
  warning, and NONFINITE_STREAK_LIMIT skipped batches in a row end it.
"""

from __future__ import annotations

import json
import math
import signal
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Protocol

import torch
from tqdm import tqdm

from common.training.checkpoints import load_file
from common.parallel.distributed import broadcast_from_main, largest_over_processes, mean_over_processes, start_job
from common.errors import CheckpointError, DataError, FolderInUseError, NonFiniteLossError
from common.training.files import remove_stale_temporaries, save_atomic, write_text_atomic
from common.training.options import format_options
from common.training.run_folder import RunLock, provenance
from common.training.runlog import RunLog
from common.training.stopping import STOP, TrainingInterrupted

# --on-nonfinite skip: this many skipped batches in a row mean the run has diverged; it stops then.
NONFINITE_STREAK_LIMIT = 20


@dataclass(frozen=True)
class RunSpec:
    """What distinguishes one training's files and checks (gan/train.py, nadsnet_pvt/train.py)."""

    name: str  # for messages: "GAN", "NADS-Net"
    state_file: str  # e.g. "gan_train_state.pth"
    state_format: str  # e.g. "pose-gan-train-state/2"; another format is refused
    log_file: str  # e.g. "loss_log.txt"
    options_file: str  # e.g. "opt.txt"
    metrics_file: str  # e.g. "nadsnet_metrics.jsonl": one JSON object per line
    messages_to_log: bool  # info messages go to the log file too (else only loss lines do)
    resume_keys: tuple[str, ...]  # options a continued run must share with the run it continues
    tensorboard_folder: str  # <checkpoints>/tensorboard/<this>: "gan", "nadsnet"


@dataclass
class Progress:
    """Where the run is: `epoch` (1-based), the batches of it already trained (or skipped), all
    iterations so far, and the non-finite bookkeeping. Saved with every state."""

    epoch: int = 1
    epoch_batches: int = 0
    total_iterations: int = 0
    skipped_batches: int = 0  # batches dropped for non-finite losses (--on-nonfinite skip)
    nonfinite_streak: int = 0  # of them, the ones in a row up to now
    loss_sums: dict[str, float] = field(default_factory=dict)  # this epoch's trained batches
    loss_batches: int = 0

    def describe(self) -> str:
        return f"epoch {self.epoch}, after {self.epoch_batches} batch(es) of it (iteration {self.total_iterations})"


class Checkpoint(Protocol):
    """The training-specific part of a save (gan.checkpoint, nadsnet_pvt.checkpoint)."""

    def state_dict(self) -> dict[str, Any]: ...  # networks, optimisers, ...: tensors and plain values

    def load_state_dict(self, state: dict[str, Any], source: Path) -> None: ...  # CheckpointError if it does not fit

    def write_files(self, directory: Path, epoch_label: str | None, progress: Progress) -> None: ...  # weights beside the state

    def write_pages(self, running: bool, progress: Progress) -> None: ...  # the HTML page(s), refreshing while running


class IterationLimitReached(Exception):
    """--max-iterations reached: the state is saved and the session ends normally."""


def capture_rng_states() -> dict[str, Any]:
    """RNG states of torch (CPU and every CUDA device) for exact resume."""
    states: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    """Inverse of capture_rng_states (CUDA states only where the device count matches)."""
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])


class Run:
    """One training run's skeleton (see the module docstring).

    Args:
        options: the parsed options; uses checkpoints_dir, continue_train, seed,
            save_latest_freq (0 = off), print_freq (0 = off), max_iterations, on_nonfinite and
            the spec's resume keys.
        spec: the training's files and checks.
        messages: lines to log first (what the preset chose, ...).
    """

    def __init__(self, options: Any, spec: RunSpec, messages: Iterable[str] = ()):
        self.options = options
        self.spec = spec
        self.directory = Path(options.checkpoints_dir)
        self.progress = Progress()
        self.job = start_job(getattr(options, "gan_device", None))
        self.is_writer = self.job.is_main  # only process 0 of a distributed job writes (and prints)
        self.log = RunLog(self.directory / spec.log_file, info_to_file=spec.messages_to_log, hold=True,
                          echo=self.is_writer)
        self.metrics = RunLog(self.directory / spec.metrics_file, info_to_file=True, hold=True, echo=False)
        self._lock = RunLock(self.directory)
        self._saved_sizes: dict[str, int] = {}
        self._files_started = False
        self._checkpoint: Checkpoint | None = None
        self._total_epochs = 0
        self._bar: tqdm | None = None
        self._batches_per_epoch = 0
        self._limit_at_epoch_end = False  # --max-iterations reached on an epoch's last batch
        self._print_clock = time.time()
        self._tensorboard = None
        self._resumed_at: int | None = None  # total_iterations of the state a continued run started from
        self.started = time.time()
        # Recorded in the options file beside the options: the job and, once placed, the devices.
        self.settings = {"world_size": str(self.job.world_size), "backend": self.job.backend or "none"}
        for message in messages:
            self.log.info(message)

    # ------------------------------------------------------------------ start and end
    def check_stop(self) -> None:
        """Between start-up phases: a stop request ends the run now, with nothing written."""
        if STOP.requested is not None and not self._files_started:
            message = f"stopped by {STOP.signal_name} before training started; nothing was written"
            self.log.info(message)
            raise TrainingInterrupted(STOP.requested, message)

    @contextmanager
    def session(self, checkpoint: Checkpoint, total_epochs: int) -> Iterator["Run"]:
        """Resume (with --continue-train), take the folder, train; on --max-iterations end
        normally, on a stop request end with TrainingInterrupted (after the save)."""
        self._checkpoint, self._total_epochs = checkpoint, total_epochs
        STOP.install()  # nests inside the scripts' own, which catches signals during start-up too
        # In a job, the stop is said once, by process 0, when all processes agreed on it.
        STOP.announce = not self.job.distributed
        try:
            self.check_stop()
            if self.options.continue_train:
                self._resume(checkpoint)
            self.check_stop()
            self._take_folder()
            STOP.phase = "training"
            try:
                yield self
            except IterationLimitReached:
                pass
            if self.is_writer:
                checkpoint.write_pages(running=False, progress=self.progress)
        finally:
            self._close()

    def _take_folder(self) -> None:
        """Process 0 takes the folder's lock (the job holds one); the others learn whether it could."""
        problem = None
        if self.is_writer:
            try:
                for message in self._lock.acquire():
                    self.log.info(message)
                for stale in remove_stale_temporaries(self.directory):
                    self.log.info(f"removed {stale.name}, a half-written file a killed run left behind")
            except (FolderInUseError, CheckpointError) as error:
                problem = error
        refusal = broadcast_from_main(None if problem is None else str(problem))
        if problem is not None:
            raise problem
        if refusal is not None:
            raise FolderInUseError(refusal)

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._tensorboard is not None:
            self._tensorboard.close()
        self._lock.release(remove_folder_if_empty=not self._files_started)
        STOP.phase, STOP.announce = "starting", True
        STOP.uninstall()

    def _resume(self, checkpoint: Checkpoint) -> None:
        path = self.directory / self.spec.state_file
        if not path.is_file():
            progress = getattr(checkpoint, "resume_without_state", lambda *_: None)(self.directory, self.log)
            if progress is None:
                raise CheckpointError(f"--continue-train: nothing to continue from ({path} not found)")
            self.progress, self._resumed_at = progress, progress.total_iterations
            return
        state = load_file(path, "training state")
        if not isinstance(state, dict) or state.get("format") != self.spec.state_format:
            found = state.get("format") if isinstance(state, dict) else type(state).__name__
            raise CheckpointError(
                f"{path} is not a {self.spec.name} training state of this version ({self.spec.state_format}; "
                f"the file says {found!r}): start a new run in another --checkpoints-dir"
            )
        saved_world = state.get("world_size", 1)
        if saved_world != self.job.world_size:
            raise CheckpointError(f"{path} was saved by a job of {saved_world} process(es); continue it with "
                                  f"{saved_world} (torchrun --nproc_per_node x --nnodes), not {self.job.world_size}")
        saved = state["options"]
        differing = [key for key in self.spec.resume_keys if saved.get(key) != getattr(self.options, key)]
        if differing:
            flags = ", ".join(f"--{key.replace('_', '-')} {saved.get(key)}" for key in differing)
            raise CheckpointError(f"{path} was saved with {flags}; continue with the same values")
        checkpoint.load_state_dict(state["parts"], path)
        restore_rng_states(state["rng"])
        self.progress = Progress(**state["progress"])
        self._resumed_at = self.progress.total_iterations
        self._saved_sizes = dict(state["file_sizes"])
        self.log.info(f"continuing from {path}: {self.progress.describe()}")

    # ------------------------------------------------------------------ the loops
    def epochs(self) -> Iterator[int]:
        while self.progress.epoch <= self._total_epochs:
            yield self.progress.epoch

    def batches(self, loader: Any) -> Iterator[Any]:
        """The epoch's remaining batches in their resumable order, with a progress bar; after
        each one: a save when due, a stop request honoured, --max-iterations."""
        progress = self.progress
        sampler = loader.batch_sampler
        sampler.set_epoch(progress.epoch, skip_batches=progress.epoch_batches)
        if hasattr(loader.dataset, "set_epoch"):
            loader.dataset.set_epoch(progress.epoch)
        total = self._batches_per_epoch = sampler.batches_per_epoch()
        self._bar = tqdm(total=total, initial=progress.epoch_batches, desc=f"epoch {progress.epoch}/{self._total_epochs}",
                         leave=False, dynamic_ncols=True, disable=not self.is_writer)
        try:
            for batch in self._loaded(loader):
                yield batch
                self._after_iteration()
        finally:
            self._bar.close()
            self._bar = None
        if signal_number := self._agreed_stop():
            self._stop_now(signal_number)  # the loader ended early on the request

    def _loaded(self, loader: Any) -> Iterator[Any]:
        iterator = iter(loader)
        try:
            while True:
                try:
                    batch = next(iterator)
                except StopIteration:
                    return
                except DataError as error:
                    where = f"epoch {self.progress.epoch}, iteration {self.progress.total_iterations + 1}"
                    raise DataError(
                        f"{error}; training stopped at {where}: fix or remove the file, then continue with "
                        f"--continue-train (the last save in {self.directory} is intact)"
                    ) from None
                except RuntimeError:
                    if STOP.requested is None:
                        raise
                    return  # a worker died of the same signal (workers normally ignore it)
                yield batch
        finally:
            shutdown = getattr(iterator, "_shutdown_workers", None)
            if shutdown is not None:  # whatever ended the loop, the workers end now, not at exit
                shutdown()

    def _after_iteration(self) -> None:
        options, progress = self.options, self.progress
        if options.save_latest_freq and progress.total_iterations % options.save_latest_freq == 0:
            self.save()
            self.log.info(f"saved the training state ({progress.describe()})")
        if signal_number := self._agreed_stop():
            self._stop_now(signal_number)
        if options.max_iterations is not None and progress.total_iterations >= options.max_iterations:
            if progress.epoch_batches >= self._batches_per_epoch:
                self._limit_at_epoch_end = True  # the epoch's end (validation, its saves) comes first
                return
            self._stop_at_iteration_limit()

    def _stop_at_iteration_limit(self) -> None:
        self.save(final=True)
        self.log.info(f"stopped after {self.progress.total_iterations} iterations (--max-iterations); state saved "
                      f"in {self.directory}, continue with --continue-train")
        raise IterationLimitReached

    @staticmethod
    def _agreed_stop() -> int:
        """The signal number of a stop request made on any process of the job, or 0."""
        return largest_over_processes(STOP.requested or 0)

    def _stop_now(self, signal_number: int) -> None:
        self.save(final=True)
        name = signal.Signals(signal_number).name
        message = (f"interrupted ({name}): saved the state at {self.progress.describe()}, in "
                   f"{self.directory}. Continue with the same command plus --continue-train.")
        self.log.info(message)
        raise TrainingInterrupted(signal_number, message)

    @contextmanager
    def step(self) -> Iterator[None]:
        """One iteration: counted whatever happens; a NonFiniteLossError raised inside is
        handled by --on-nonfinite (see the module docstring)."""
        progress = self.progress
        progress.epoch_batches += 1
        progress.total_iterations += 1
        try:
            yield
        except NonFiniteLossError as error:
            self._nonfinite(error)
        else:
            progress.nonfinite_streak = 0
        finally:
            if self._bar is not None:
                self._bar.update(1)

    def _nonfinite(self, error: NonFiniteLossError) -> None:
        progress = self.progress
        where = f"at epoch {progress.epoch}, iteration {progress.total_iterations}"
        if self.options.on_nonfinite == "stop":
            raise NonFiniteLossError(
                f"{error} {where}; stopped without saving, so the last save in {self.directory} is intact "
                "(lower --lr, check the data, or --on-nonfinite skip)", error.terms, error.network) from None
        progress.skipped_batches += 1
        progress.nonfinite_streak += 1
        self.log.info(f"WARNING: {error} {where}: batch skipped, no {error.network or 'network'} update")
        if progress.nonfinite_streak >= NONFINITE_STREAK_LIMIT:
            raise NonFiniteLossError(
                f"{progress.nonfinite_streak} batches in a row had non-finite losses (the last: {', '.join(error.terms)} "
                f"{where}): the run has diverged; stopped without saving, the last save in {self.directory} is "
                "intact (lower --lr)", error.terms, error.network)

    @property
    def batch_index(self) -> int:
        """Inside `step()`: the 0-based index of the current batch in its epoch."""
        return self.progress.epoch_batches - 1

    def every(self, frequency: int) -> bool:
        """Inside `step()`: is this iteration a multiple of `frequency` (0 = never)?"""
        return bool(frequency) and self.progress.total_iterations % frequency == 0

    def record(self, losses: dict[str, torch.Tensor]) -> dict[str, float] | None:
        """Add a step's losses to the epoch means; on a print step (every --print-freq) print
        them (SPADE's loss line, into the log) and return them as numbers, else None. Only a
        print step reads the values back from the device."""
        progress = self.progress
        for name, value in losses.items():
            progress.loss_sums[name] = progress.loss_sums.get(name, 0.0) + value.detach()
        progress.loss_batches += 1
        if not self.every(self.options.print_freq):
            return None
        values = dict(zip(losses, mean_over_processes([float(value) for value in losses.values()])))
        seconds = (time.time() - self._print_clock) / self.options.print_freq
        self._print_clock = time.time()
        terms = " ".join(f"{name}: {value:.3f}" for name, value in values.items())
        self.log.line(f"(epoch: {progress.epoch}, iters: {progress.total_iterations}, time: {seconds:.3f}) {terms}")
        if self._bar is not None:
            self._bar.set_postfix({name: f"{value:.3g}" for name, value in values.items()}, refresh=False)
        self.scalars({f"loss/{name}": value for name, value in values.items()})
        return values

    def epoch_means(self) -> dict[str, float]:
        """The current epoch's mean losses over its trained batches (continued epochs included;
        in a job, over every process's share)."""
        batches = max(1, self.progress.loss_batches)
        sums = mean_over_processes([float(total) for total in self.progress.loss_sums.values()])
        return {name: total / batches for name, total in zip(self.progress.loss_sums, sums)}

    def end_epoch(self, save: bool, epoch_label: str | None = None) -> None:
        """Move on to the next epoch; save the state (and the checkpoint's files, with an epoch
        copy when `epoch_label` is given) when `save`, or when a stop was requested."""
        progress = self.progress
        progress.epoch, progress.epoch_batches = progress.epoch + 1, 0
        progress.loss_sums, progress.loss_batches = {}, 0
        signal_number = self._agreed_stop()
        if save or signal_number:
            self.save(epoch_label)
        if signal_number and progress.epoch <= self._total_epochs:
            self._stop_now(signal_number)
        if self._limit_at_epoch_end and progress.epoch <= self._total_epochs:
            self._stop_at_iteration_limit()

    @contextmanager
    def validating(self) -> Iterator[None]:
        """Marks a validation pass (a stop request then says it finishes the validation first)."""
        phase, STOP.phase = STOP.phase, "validating"
        try:
            yield
        finally:
            STOP.phase = phase

    # ------------------------------------------------------------------ files
    def save(self, epoch_label: str | None = None, final: bool = False) -> None:
        """Save the state and the checkpoint's files (atomically; see the module docstring)."""
        if not self.is_writer:
            return
        self._start_files()
        state = {
            "format": self.spec.state_format,
            "provenance": provenance(),
            "options": {key: getattr(self.options, key) for key in self.spec.resume_keys},
            "world_size": self.job.world_size,
            "progress": self._progress_state(),
            "file_sizes": {"log": self.log.size(), "metrics": self.metrics.size()},
            "rng": capture_rng_states(),
            "parts": self._checkpoint.state_dict(),
        }
        save_atomic(state, self.directory / self.spec.state_file)
        self._checkpoint.write_files(self.directory, epoch_label, self.progress)
        if final:
            self._checkpoint.write_pages(running=False, progress=self.progress)

    def _progress_state(self) -> dict[str, Any]:
        state = asdict(self.progress)
        state["loss_sums"] = {name: float(value) for name, value in self.progress.loss_sums.items()}
        return state

    def _start_files(self) -> None:
        """At the first save: cut the logs back to the state being continued, write what was
        held, and the options file."""
        if self._files_started:
            return
        self._files_started = True
        self.log.start_file(cut_back_to=self._saved_sizes.get("log"))
        self.metrics.start_file(cut_back_to=self._saved_sizes.get("metrics"))
        write_text_atomic(format_options(self.options, {**self.settings, **provenance()}),
                          self.directory / self.spec.options_file)

    def write_metrics(self, record: dict[str, Any]) -> None:
        """Append one JSON object (NaN -> null) to the metrics file (cut back on resume)."""
        if not self.is_writer:
            return
        clean = {key: (None if isinstance(value, float) and not math.isfinite(value) else value)
                 for key, value in record.items()}
        self.metrics.line(json.dumps(clean, sort_keys=False))

    def scalars(self, values: dict[str, float], step: int | None = None) -> None:
        """TensorBoard scalars at `step` (default: the iterations so far, the x axis of every
        scalar of both trainings), in <checkpoints>/tensorboard/<spec.tensorboard_folder>,
        opened at first use. A continued run hides every event the interrupted one wrote after
        the save it continues from (those iterations are trained again); non-finite values are
        left out."""
        if not self.is_writer:
            return
        if self._tensorboard is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                self.log.info("WARNING: tensorboard is not installed: no TensorBoard scalars")
                self._tensorboard = False
                return
            purge = None if self._resumed_at is None else self._resumed_at + 1
            self._tensorboard = SummaryWriter(str(self.directory / "tensorboard" / self.spec.tensorboard_folder),
                                              purge_step=purge)
        if self._tensorboard:
            step = self.progress.total_iterations if step is None else step
            for tag, value in values.items():
                if math.isfinite(value):
                    self._tensorboard.add_scalar(tag, value, step)
            self._tensorboard.flush()

    @property
    def total_epochs(self) -> int:
        return self._total_epochs

    def elapsed(self) -> float:
        """Seconds since the run started."""
        return time.time() - self.started

    def finish(self, summary: str) -> None:
        """The last line: time taken, skipped batches, and what the training wants to say."""
        skipped = self.progress.skipped_batches
        note = f"; {skipped} batch(es) skipped for non-finite losses" if skipped else ""
        self.log.info(f"done in {time.time() - self.started:.0f} s{note}; {summary}")
