"""OUT, the folder a generate.py command writes: owned by that command until it finishes.

What a command writes there (the seed's layout, so OUT reads like a source folder):
`Raw_Images/<id>.png`, `Seatbelt_Mask/<id>.<ext>`, one annotation JSON named like the source's,
`index.html` with `contact_sheet/`, and its progress record in `.generate/`:

- `.generate/command.json`: {"format", "command", "arguments": {option: value}, "inputs":
  {file: sha256}}, written before the first frame. The arguments are every option that shapes
  the output (paths made absolute; --out and --overwrite left out), the inputs the generator
  weights, its configuration and the annotation file, so a changed file is a changed command.
- `.generate/progress.json`: {"frames_done", "frames", "finished"}, rewritten after every batch.
  Batches are written in order, so the first `frames_done` frames (and their masks and contact
  sheet pictures) are complete; a rerun of the same command starts at the next batch.
- `.generate/.run.lock`: common.training.run_folder's lock while a command runs (one run per OUT).

Every file is written atomically (common.training.files), so a killed run leaves only complete files;
the annotation JSON is written last. A non-empty OUT that is not this command's own output is
refused, writing nothing, unless --overwrite (which first empties OUT, and never when OUT holds
one of the command's inputs).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Callable, Sequence

from common.errors import FolderInUseError, OptionError
from common.posedata.dataset import annotation_file_text
from common.training.files import remove_stale_temporaries, write_text_atomic
from common.training.run_folder import LOCK_NAME, RunLock

PROGRESS_DIR = ".generate"
COMMAND_FILE = "command.json"
PROGRESS_FILE = "progress.json"
RECORD_FORMAT = "generate-progress/1"
FRESH, RESUME, FINISHED = "fresh", "resume", "finished"


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def describe_differences(current: dict, started: dict) -> str:
    """'--copies 3 (OUT was started with 2), ...' for the fields of two command records that differ."""
    if current.get("command") != started.get("command"):
        return f"it holds the output of `generate.py {started.get('command')}`"
    differences = []
    for section in ("arguments", "inputs"):
        now, then = current.get(section, {}), started.get(section, {})
        for key in sorted(set(now) | set(then)):
            if now.get(key) != then.get(key):
                label = f"--{key.replace('_', '-')} {now.get(key)}" if section == "arguments" else f"{key} (contents changed)"
                differences.append(label if section == "inputs" else f"{label} (OUT was started with {then.get(key)})")
    if not differences:
        return f"its progress record is of another format ({started.get('format')}, expected {current.get('format')})"
    return "it was started with other options: " + ", ".join(differences)


def write_annotation_file(path: Path, annotations: Sequence[dict], info: dict) -> Path:
    """The seed's format ({"annotations": [...]}, one annotation per line) plus an "info" object, atomically."""
    return write_text_atomic(annotation_file_text(annotations, info=info), path)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


class OutputFolder:
    """OUT for one command (see the module docstring).

    Args:
        out: the folder.
        command: this command's record ({"command", "arguments", "inputs"}).
        overwrite: empty a folder that is not this command's unfinished output instead of refusing.
        inputs: the command's input files and folders; OUT may not be or hold any of them.
    Use: `check()` (writes nothing; refuses with one line), then `start()`, `record()` after each
    batch, `finish()`; `release()` in a finally.
    """

    def __init__(self, out: Path, command: dict, overwrite: bool, inputs: Sequence[Path]):
        self.out = Path(out)
        self.command = {"format": RECORD_FORMAT, **command}
        self.overwrite = overwrite
        self.inputs = [Path(path) for path in inputs if path is not None]
        self.state = FRESH
        self.empty_first = False
        self.total = 0
        self._lock: RunLock | None = None

    @property
    def record_dir(self) -> Path:
        return self.out / PROGRESS_DIR

    def check(self) -> str:
        """FRESH, RESUME (this command's unfinished output) or FINISHED (this command's complete
        output). Raises OptionError (OUT is a file or holds an input) or FolderInUseError (OUT
        holds something else and there is no --overwrite). Writes nothing."""
        if self.out.exists() and not self.out.is_dir():
            raise OptionError(f"--out {self.out}", "is a file; give a folder (it is created if needed)")
        resolved = self.out.resolve()
        for path in self.inputs:
            if path.resolve() == resolved or resolved in path.resolve().parents:
                raise OptionError(f"--out {self.out}", f"holds the input {path}; write the output to another folder")
        started = self._started_command()
        if started == self.command and not self.overwrite:
            self.state = FINISHED if self._progress().get("finished") else RESUME
        elif self._is_empty():
            self.state = FRESH
        elif self.overwrite:
            self.state, self.empty_first = FRESH, True
        else:
            if started:
                hint = "" if self._progress().get("finished") else "rerun the command that started it to finish it, "
                why = f"{describe_differences(self.command, started)}; {hint}"
            else:
                why = "it is not empty and holds no output of generate.py; "
            raise FolderInUseError(f"--out {self.out}: {why}use an empty folder, or --overwrite (which deletes what "
                                   "it holds)")
        return self.state

    def _is_empty(self) -> bool:
        """True for a missing or empty OUT, or one holding only a progress folder without a command
        record (a start killed before its record was written)."""
        if not self.out.is_dir():
            return True
        entries = list(self.out.iterdir())
        return not entries or ([entry.name for entry in entries] == [PROGRESS_DIR]
                               and not (self.record_dir / COMMAND_FILE).exists())

    def _started_command(self) -> dict | None:
        try:
            record = json.loads((self.record_dir / COMMAND_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    def _progress(self) -> dict:
        try:
            progress = json.loads((self.record_dir / PROGRESS_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return progress if isinstance(progress, dict) else {}

    def start(self, total: int, log: Callable[[str], None] = print) -> int:
        """Take OUT (its lock), empty it for --overwrite, write the command record on a fresh
        start; returns how many of the `total` frames are already done."""
        self._lock = RunLock(self.record_dir, flag="--out")
        self._lock.acquire()
        if self.empty_first:
            log(f"--overwrite: emptying {self.out}")
            for entry in self.out.iterdir():
                if entry.name != PROGRESS_DIR:
                    _remove(entry)
            for entry in self.record_dir.iterdir():
                if entry.name != LOCK_NAME:
                    _remove(entry)
        remove_stale_temporaries(self.out)
        self.total = total
        if self.state == FRESH:
            write_text_atomic(json.dumps(self.command, indent=1, sort_keys=True) + "\n", self.record_dir / COMMAND_FILE)
            self.record(0)
            return 0
        done = int(self._progress().get("frames_done", 0))
        log(f"{self.out}: continuing an unfinished run of this command, {done} of {total} frames done")
        return min(max(done, 0), total)

    def record(self, frames_done: int, finished: bool = False) -> None:
        """The first `frames_done` frames are complete (and, with `finished`, everything is)."""
        progress = {"frames_done": frames_done, "frames": self.total, "finished": finished}
        write_text_atomic(json.dumps(progress) + "\n", self.record_dir / PROGRESS_FILE)

    def finish(self) -> None:
        self.record(self.total, finished=True)

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None


def command_record(name: str, arguments: dict[str, Any], input_files: dict[str, Path]) -> dict:
    """A command's identity: its name, its output-shaping arguments (paths absolute) and the
    SHA-256 of its input files."""
    def plain(value: Any) -> Any:  # as it reads back from JSON
        if isinstance(value, Path):
            return str(value.resolve())
        return list(value) if isinstance(value, tuple) else value

    return {
        "command": name,
        "arguments": {key: plain(value) for key, value in sorted(arguments.items())},
        "inputs": {key: file_sha256(path) for key, path in sorted(input_files.items()) if path.is_file()},
    }
