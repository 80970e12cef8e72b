"""The training scripts' log: lines printed above the tqdm bars and appended to a text file.

A run writes nothing before its data, options and checkpoints have been checked, so a log
can hold its lines in memory until `start_file` is called. A continued run first cuts the
file back to the size saved with the state it continues from, so no line appears twice.
"""

from __future__ import annotations

from pathlib import Path

from tqdm import tqdm


class RunLog:
    """Args:
        path: the log file.
        info_to_file: whether `info` messages go to the file too (NADS-Net's log), or are only
            printed (the GAN's loss_log.txt holds loss lines only, as in SPADE).
        hold: keep file lines in memory until `start_file` is called.
        echo: print lines (a metrics file is written, not printed).
    """

    def __init__(self, path: str | Path, info_to_file: bool = True, hold: bool = False, echo: bool = True):
        self.path = Path(path)
        self.info_to_file = info_to_file
        self.echo = echo
        self.held: list[str] | None = [] if hold else None

    def info(self, message: str) -> None:
        """Print a message (and log it, with `info_to_file`)."""
        if self.echo:
            tqdm.write(message)
        if self.info_to_file:
            self._append(message)

    def line(self, text: str) -> None:
        """Print a line and always log it."""
        if self.echo:
            tqdm.write(text)
        self._append(text)

    def _append(self, text: str) -> None:
        if self.held is not None:
            self.held.append(text)
            return
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(text + "\n")

    def size(self) -> int:
        """Bytes in the log file now (saved with the state: a resumed run cuts the log back to it)."""
        return self.path.stat().st_size if self.path.is_file() else 0

    def start_file(self, cut_back_to: int | None = None) -> None:
        """Start writing to the file: first drop what a killed run logged after the save being
        continued from (`cut_back_to` bytes are kept), then write the lines held so far."""
        if cut_back_to is not None and self.size() > cut_back_to:
            with open(self.path, "r+b") as handle:
                handle.truncate(cut_back_to)
        held, self.held = self.held or [], None
        if held:
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write("".join(line + "\n" for line in held))
