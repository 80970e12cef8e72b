"""The errors a run reports as one readable line (no traceback), and the scripts' exit codes.

Every error a user can cause (a bad file, a bad option, a folder in use, a diverged loss)
is one of these; `common.training.cli.run_script` prints its message on one line and exits with the
code below. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from typing import Any

EXIT_DONE = 0
EXIT_ERROR = 1  # bad data, a checkpoint refused, a folder in use, a non-finite loss, a failed save
EXIT_BAD_OPTIONS = 2  # as argparse: an option value that cannot work, refused before anything is written
# A stop request (Ctrl-C, SIGTERM) that saved the state exits 128 + the signal number: 130, 143.


def first_line(error: BaseException, limit: int = 200) -> str:
    """The first sentence of an exception's first line (torch's messages run on for lines)."""
    text = str(error).strip()
    line = text.splitlines()[0] if text else type(error).__name__
    sentence = line.split(". ")[0]
    return sentence if len(sentence) <= limit else sentence[: limit - 3] + "..."


class DataError(ValueError):
    """A data file is missing or does not hold what the loader expects (one-line message
    naming the file, the annotation index and the field)."""

    def __init__(self, message: Any = "", *args: Any) -> None:
        # A DataLoader worker re-raises an error in the main process as
        # DataError("Caught DataError in DataLoader worker process 0.\nOriginal Traceback ...
        # \ncommon.errors.DataError: <message>"): keep the one line that says what is wrong.
        if isinstance(message, str) and message.startswith("Caught DataError") and "\n" in message:
            last = [line for line in message.strip().splitlines() if line.strip()][-1]
            message = last.split("DataError: ", 1)[-1]
        super().__init__(message, *args)


class CheckpointError(RuntimeError):
    """A checkpoint or run file could not be written or read; the message is one readable line."""


class OptionError(ValueError):
    """An option value that cannot work, found after parsing (it depends on other options, the
    files found or the networks' shapes). `option` names the flag; the message says what would
    work. (One argument: the whole message, already naming the flag.)"""

    def __init__(self, option: str, message: str | None = None):
        super().__init__(option if message is None else f"{option}: {message}")
        self.option = option.split(":")[0] if message is None else option


class FolderInUseError(RuntimeError):
    """Another run owns the checkpoints folder (see common.training.run_folder)."""


class NonFiniteLossError(RuntimeError):
    """A loss term became NaN or infinite; the message names the term(s).

    `terms`: the names of the non-finite terms; `network`: whose step it was (that network was
    not updated), where a run trains several ('generator' or 'discriminator' in the GAN).
    """

    def __init__(self, message: str, terms: tuple[str, ...] = (), network: str = ""):
        super().__init__(message)
        self.terms = tuple(terms)
        self.network = network


# What common.training.cli.run_script reports as one line with EXIT_ERROR.
USER_ERRORS = (DataError, CheckpointError, FolderInUseError, NonFiniteLossError)
