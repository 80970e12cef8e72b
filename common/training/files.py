"""Files written so that a run killed at any moment never leaves one half-written.

Every write goes to a temporary file in the same folder (`.<name>.<pid>.<random>.tmp`), is
flushed (and fsynced), then renamed over the target: the target is either as it was or complete.
Checkpoints, training states, option files, logs' companions, pictures and HTML pages all go
through `write_atomic`. The rename alone already protects against a killed process; the fsyncs
(file and folder) protect against a machine that loses power. Pictures and pages skip them
(`durable=False`): they are redrawn at the next display step, and at the seed's frequencies
(display every iteration, 3 pictures and a page each) the fsyncs were most of a display step's
cost (docs/performance.md, the page). A temporary left by a killed process is removed by the next run in the
folder (`remove_stale_temporaries`).
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

from common.errors import CheckpointError, first_line

TEMP_SUFFIX = ".tmp"


def _read_umask() -> int:
    """The process's umask. Reading it means setting it, so it is read once, at import, before
    any thread of ours could create a file in between."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# A temporary file is created private (mode 0600); the finished file gets the mode the umask
# gives any file open() creates (0644 under umask 022), so colleagues and web servers can read it.
FILE_MODE = 0o666 & ~_read_umask()


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # some file systems do not allow opening a directory; the rename is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: str | Path, write: Callable[[io.BufferedWriter], None], durable: bool = True) -> Path:
    """Write a file through `write(file_object)` atomically: temp file, flush, fsync, rename
    (and fsync of the folder). `durable=False` leaves out both fsyncs: still never half-written
    when the process dies, but possibly lost with the machine's power.

    On any failure (disk full, read-only folder, an exception in `write`) the temporary file is
    removed, the previous file at `path` is left untouched, and CheckpointError is raised.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=TEMP_SUFFIX, dir=path.parent)
    except OSError as error:
        raise CheckpointError(f"cannot write {path}: {error.strerror or error}") from error
    try:
        os.chmod(tmp_name, FILE_MODE)
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException as error:
        try:
            os.unlink(tmp_name)
        except OSError:
            pass
        if isinstance(error, OSError):
            reason = error.strerror or str(error) or type(error).__name__
        elif isinstance(error, Exception) and not isinstance(error, CheckpointError):
            # torch.save reports a failed write (e.g. a full disk) as a RuntimeError
            reason = first_line(error)
        else:
            raise  # KeyboardInterrupt, SystemExit, our own errors: the temp file is gone, nothing else changed
        raise CheckpointError(f"cannot write {path}: {reason}; the previous file is unchanged") from error
    if durable:
        _fsync_directory(path.parent)
    return path


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by someone else
    return True


def remove_stale_temporaries(directory: str | Path) -> list[Path]:
    """Delete the temporary files that killed runs left in `directory` and its subfolders.

    write_atomic names its temporaries `.<target>.<pid>.<random>.tmp`; only those whose
    process no longer runs are removed, so a run writing into the same folder at the same
    time is not disturbed. Returns the removed paths.
    """
    removed = []
    for candidate in Path(directory).rglob(f".*{TEMP_SUFFIX}"):
        parts = candidate.name.rsplit(".", 3)  # ['.<target>', '<pid>', '<random>', 'tmp']
        if len(parts) != 4 or not parts[1].isdigit() or _process_alive(int(parts[1])):
            continue
        try:
            candidate.unlink()
            removed.append(candidate)
        except OSError:
            pass
    return removed


def save_atomic(obj: Any, path: str | Path) -> Path:
    """`torch.save(obj, path)`, atomically."""
    return write_atomic(path, lambda handle: torch.save(obj, handle))


def write_text_atomic(text: str, path: str | Path, durable: bool = True) -> Path:
    """Write a UTF-8 text file atomically (see write_atomic for `durable`)."""
    return write_atomic(path, lambda handle: handle.write(text.encode("utf-8")), durable)
