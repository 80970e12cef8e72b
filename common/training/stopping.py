"""Stop requests: Ctrl-C (SIGINT) and SIGTERM end a run at a clean point, never mid-update.

A signal that lands in the middle of an iteration would leave the networks half-updated (the
generator stepped, the discriminator not yet), and a state saved then would not resume to the
same weights. So the first SIGINT or SIGTERM only records the request and says once what will
happen; the run finishes the iteration (or validation) it is in, saves at that boundary and
exits with 128 + the signal number (130, 143). Before the first iteration nothing is saved and
nothing is written. A second signal stops at once (KeyboardInterrupt), without saving.

Schedulers, `timeout` and a terminal's Ctrl-C signal the whole process group, DataLoader
workers included. Workers therefore ignore both signals (`ignore_stop_signals`, their
`worker_init_fn`), and the handler does nothing in any process but the one that installed it
(a forked worker inherits the handler before its init function runs). The loader's workers
then keep serving batches until the main process stops and shuts them down.

The scripts install the handler as their very first statement (`STOP.install()`, before torch
is imported), so a signal during start-up is a request too. This module imports nothing heavy.
"""

from __future__ import annotations

import atexit
import os
import signal
import threading
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

# What the run will do on a request, by the phase it is in (said once, when the signal arrives).
_ANNOUNCEMENTS = {
    "starting": "stopping before training starts; nothing will be written",
    "training": "finishing this iteration, then saving the state",
    "validating": "finishing the validation, then saving the state",
}


def _write_to_stderr(text: str) -> None:
    """Write straight to file descriptor 2: a signal handler must not re-enter the buffered
    sys.stderr/sys.stdout objects (Python raises 'reentrant call' if it interrupted a write)."""
    try:
        os.write(2, text.encode("utf-8", "replace"))
    except OSError:
        pass


class StopRequests:
    """The process-wide stop request (use the module's `STOP`).

    `requested` is the signal number of the first SIGINT/SIGTERM since `install()`, or None.
    `phase` ('starting', 'training', 'validating') only changes what the message
    says. `install()` / `uninstall()` nest: the outermost pair sets and restores the handlers.
    Outside the main thread handlers cannot be installed; signals then behave as usual.
    """

    def __init__(self) -> None:
        self.requested: int | None = None
        self.phase = "starting"
        self.announce = True  # say at once what will happen (a distributed run says it when agreed)
        self._owner_pid: int | None = None
        self._depth = 0
        self._previous: dict[int, object] = {}

    def _handle(self, signal_number: int, frame: FrameType | None) -> None:
        if os.getpid() != self._owner_pid:
            return  # a forked worker before its init function ran: the main process decides
        if self.requested is not None:
            raise KeyboardInterrupt
        self.requested = signal_number
        if not self.announce:
            return
        name = signal.Signals(signal_number).name
        _write_to_stderr(
            f"\n{name} received: {_ANNOUNCEMENTS.get(self.phase, 'stopping')} "
            "(send it again to stop at once without saving)\n"
        )

    def install(self) -> "StopRequests":
        self._depth += 1
        if self._depth == 1 and threading.current_thread() is threading.main_thread():
            self.requested = None
            self.phase = "starting"
            self._owner_pid = os.getpid()
            for number in STOP_SIGNALS:
                self._previous[number] = signal.getsignal(number)
                signal.signal(number, self._handle)
            _end_workers_at_exit()
        return self

    def uninstall(self) -> None:
        self._depth = max(0, self._depth - 1)
        if self._depth == 0:
            for number, handler in self._previous.items():
                signal.signal(number, handler)
            self._previous.clear()
            self.requested = None  # a request belongs to the run that got it

    def __enter__(self) -> "StopRequests":
        return self.install()

    def __exit__(self, *exc_info) -> None:
        self.uninstall()

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.requested).name if self.requested is not None else ""


STOP = StopRequests()


_EXIT_HOOK_REGISTERED = False


def _end_workers_at_exit() -> None:
    """Workers ignore SIGTERM, which is how multiprocessing ends leftover workers at exit: a
    worker whose loader was never shut down (an error left its iterator behind) would keep the
    interpreter waiting for ever. This hook, run before multiprocessing's own, kills them."""
    global _EXIT_HOOK_REGISTERED
    if _EXIT_HOOK_REGISTERED:
        return
    _EXIT_HOOK_REGISTERED = True

    def kill_leftover_workers() -> None:
        import multiprocessing

        children = [child for child in multiprocessing.active_children() if child.daemon]
        if children:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # torch's handler would report them as failures
            for child in children:
                child.kill()

    atexit.register(kill_leftover_workers)


def ignore_stop_signals(worker_id: int = 0) -> None:
    """DataLoader `worker_init_fn`: workers ignore SIGINT/SIGTERM sent to the process group;
    the main process stops them when it stops."""
    for number in STOP_SIGNALS:
        signal.signal(number, signal.SIG_IGN)


class TrainingInterrupted(KeyboardInterrupt):
    """The run stopped on a signal (after saving its state, if it had trained at all);
    `exit_code` is 128 + the signal number."""

    def __init__(self, signal_number: int, message: str = ""):
        super().__init__(message)
        self.signal_number = int(signal_number)
        self.exit_code = 128 + self.signal_number
