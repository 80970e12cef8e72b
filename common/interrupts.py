"""Stopping a training run cleanly: on Ctrl-C (SIGINT) or SIGTERM, and the scripts' exit codes.

A signal that lands in the middle of an iteration would leave the networks half-updated (the
generator stepped, the discriminator not yet), and a state saved then would not resume to the
same weights. So during the training loop the first SIGINT or SIGTERM only sets a flag: the
loop finishes the iteration it is in, saves the state at that batch boundary and raises
`TrainingInterrupted`, which the scripts turn into a clean exit (128 + signal number, i.e. 130
for Ctrl-C, 143 for SIGTERM) with a message saying how to continue. A second signal stops at
once with KeyboardInterrupt, without saving (the last save stays as it is).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from types import FrameType
from typing import Any, Callable, Iterable, Iterator, Sequence

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# --on-nonfinite skip: this many skipped batches in a row mean the run has diverged; it stops then.
NONFINITE_STREAK_LIMIT = 20


class NonFiniteLossError(RuntimeError):
    """A loss term became NaN or infinite; the message names the term(s).

    `terms`: the names of the non-finite terms; `network`: whose step it was (that network was
    not updated), where a run trains several ('generator' or 'discriminator' in the GAN).
    """

    def __init__(self, message: str, terms: tuple[str, ...] = (), network: str = ""):
        super().__init__(message)
        self.terms = tuple(terms)
        self.network = network


class TrainingInterrupted(KeyboardInterrupt):
    """The run stopped on a signal after saving its state; `exit_code` is 128 + the signal number."""

    def __init__(self, signal_number: int, message: str = ""):
        super().__init__(message)
        self.signal_number = int(signal_number)
        self.exit_code = 128 + self.signal_number


def _write_to_stderr(text: str) -> None:
    """Write straight to file descriptor 2: a signal handler must not re-enter the buffered
    sys.stderr/sys.stdout objects (Python raises 'reentrant call' if it interrupted a write)."""
    try:
        os.write(2, text.encode("utf-8", "replace"))
    except OSError:
        pass


class GracefulStop:
    """Context manager: while active, the first SIGINT/SIGTERM sets `requested` (the signal
    number) instead of raising, and says on stderr what will happen; a second one raises
    KeyboardInterrupt.

    Outside the main thread signal handlers cannot be installed; the manager then does
    nothing and signals behave as usual.
    """

    def __init__(self) -> None:
        self.requested: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signal_number: int, frame: FrameType | None) -> None:
        if self.requested is not None:
            raise KeyboardInterrupt
        self.requested = signal_number
        name = signal.Signals(signal_number).name
        _write_to_stderr(
            f"\n{name} received: finishing this iteration, then saving the state "
            "(send it again to stop at once without saving)\n"
        )

    def __enter__(self) -> "GracefulStop":
        if threading.current_thread() is threading.main_thread():
            for number in STOP_SIGNALS:
                self._previous[number] = signal.getsignal(number)
                signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()


def batches_until_stopped(loader: Iterable, stop: GracefulStop) -> Iterator:
    """Iterate over a DataLoader; when a stop was requested and the loader's worker processes
    died of the same Ctrl-C (a terminal sends it to the whole process group), end quietly
    instead of raising: the caller then stops at this batch boundary."""
    iterator = iter(loader)
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except RuntimeError:
            if stop.requested is not None:
                return
            raise
        yield batch


def run_command(train: Callable[..., Any], options: Any, messages: Sequence[str], errors: tuple[type[BaseException], ...]) -> int:
    """Run a training for a script's `main` and turn its outcome into an exit code.

    0 done; 1 an expected failure (`errors`, or an OSError such as a full disk), reported as
    one line on stderr without a traceback; 128 + signal number after a stop that saved the
    state (130 for Ctrl-C, 143 for SIGTERM); 130 after an immediate second Ctrl-C.
    """
    try:
        train(options, messages)
    except TrainingInterrupted as stopped:
        return stopped.exit_code
    except KeyboardInterrupt:
        print(f"interrupted: stopped at once; the files in {options.checkpoints_dir} are as the last save left them",
              file=sys.stderr)
        return 130
    except errors as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        where = f"{error.filename}: " if error.filename else ""
        print(f"error: {where}{error.strerror or error}", file=sys.stderr)
        return 1
    return 0
