"""A run owns its checkpoints folder: one lock per folder, and what a run records about itself.

Two runs on one `--checkpoints-dir` would interleave their logs and overwrite each other's
checkpoints. So before a run writes anything it takes `<folder>/.run.lock`:

- the lock is an `fcntl.flock` on that file, held for the life of the run: the kernel lets only
  one process hold it, two runs started at the same moment included, and releases it when the
  process ends however it ends (even `kill -9`);
- the file names its holder (pid, host, start time, command), so a second run is refused with
  one line naming the other run;
- a file naming a process that is gone (the lock is free, the host is this one) was left by a
  run that did not end cleanly: it is taken over with a line saying so. A lock written on
  another host is only taken over when its holder released it cleanly; otherwise the run
  refuses and says which file to delete if that run is gone (a network file system may not
  carry flock between hosts).

The lock is the run's, not the process's: in a distributed job only process 0 takes it. It
belongs to the main process alone: a process forked from it (a DataLoader worker) closes its
copy of the descriptor at once, so an orphaned worker never keeps a killed run's folder locked.
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from common.errors import CheckpointError, FolderInUseError

LOCK_NAME = ".run.lock"
# Descriptors of the locks this process holds; a forked child closes them (a flock is held for
# as long as any process has the descriptor open).
_HELD_LOCKS: set[int] = set()


def _close_inherited_locks() -> None:
    for fd in _HELD_LOCKS:
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD_LOCKS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_inherited_locks)


def _host() -> str:
    return socket.gethostname()


def _describe(holder: dict) -> str:
    since = holder.get("since", "an unknown time")
    return f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, since {since}"


@dataclass
class RunLock:
    """The lock of one checkpoints folder (see the module docstring). `acquire()` creates the
    folder if needed; `release()` clears the file and closes it. Returns messages to log."""

    directory: Path
    flag: str = "--checkpoints-dir"  # the option naming the folder, for messages
    _fd: int | None = None
    created_directory: bool = False

    @property
    def path(self) -> Path:
        return self.directory / LOCK_NAME

    def acquire(self) -> list[str]:
        try:
            self.created_directory = not self.directory.exists()
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise CheckpointError(f"cannot create {self.flag} {self.directory}: {error.strerror or error}") from None
        for _ in range(10):  # the file can be replaced between open and flock; then try again
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = self._read(fd)
                os.close(fd)
                raise FolderInUseError(
                    f"{self.directory} is in use by another run ({_describe(holder)}): wait for it to end, "
                    f"or use another {self.flag}"
                ) from None
            if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
                break
            os.close(fd)
        else:
            raise FolderInUseError(f"{self.path}: could not take the lock (the file keeps being replaced)")
        self._fd = fd
        _HELD_LOCKS.add(fd)
        messages = self._take_over(self._read(fd))
        self._write({"pid": os.getpid(), "host": _host(), "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                     "command": " ".join(sys.argv)})
        return messages

    def _take_over(self, previous: dict) -> list[str]:
        if not previous:
            return []
        if previous.get("host") != _host():
            _HELD_LOCKS.discard(self._fd)
            os.close(self._fd)
            self._fd = None
            raise FolderInUseError(
                f"{self.directory} is locked by a run on another host ({_describe(previous)}); if that run has "
                f"ended, delete {self.path} and start again"
            )
        return [f"note: took over the lock of a run that did not end cleanly ({_describe(previous)}; "
                "that process is gone)"]

    @staticmethod
    def _read(fd: int) -> dict:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 4096).decode("utf-8", "replace").strip()
        try:
            holder = json.loads(text) if text else {}
        except json.JSONDecodeError:
            holder = {"pid": "?", "host": "?", "since": f"(unreadable lock file: {text[:40]!r})"}
        return holder if isinstance(holder, dict) else {}

    def _write(self, holder: dict) -> None:
        os.ftruncate(self._fd, 0)
        os.lseek(self._fd, 0, os.SEEK_SET)
        os.write(self._fd, (json.dumps(holder) + "\n").encode())
        os.fsync(self._fd)

    def release(self, remove_folder_if_empty: bool = False) -> None:
        """End the run's ownership: an empty lock file means 'released cleanly'. With
        `remove_folder_if_empty`, a folder this run created and never wrote to is removed."""
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)
        if remove_folder_if_empty and self.created_directory:
            try:
                self.path.unlink()
                self.directory.rmdir()
            except OSError:
                pass
        _HELD_LOCKS.discard(self._fd)
        os.close(self._fd)  # closing releases the flock
        self._fd = None


def _git_commit(root: Path) -> str:
    """The checkout's commit (with '+changes' when files differ from it), or 'unknown'."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if commit.returncode != 0:
            return "unknown (not a git checkout)"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10)
        return commit.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown (git not available)"


_PROVENANCE: dict[str, str] | None = None


def provenance() -> dict[str, str]:
    """What made a run's files: the project's version (git commit), torch and Python versions.
    Recorded in opt.txt / nadsnet_opt.txt and in every training state. Computed once."""
    global _PROVENANCE
    if _PROVENANCE is None:
        import torch

        _PROVENANCE = {
            "project_commit": _git_commit(Path(__file__).resolve().parents[2]),
            "torch": str(torch.__version__),  # a TorchVersion would not load with weights_only=True
            "python": platform.python_version(),
        }
    return dict(_PROVENANCE)
