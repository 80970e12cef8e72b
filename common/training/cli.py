"""What the training scripts share on the command line: one-line option errors and exit codes.

The user's mistakes (options, data, checkpoints, folders) are the project's own error types
(common.errors) and the operating system's refusals of a path or device (OSError: a missing or
unreadable file, a full disk), each reported as one line; any other exception is a bug and
keeps its traceback.

Exit codes (docs/after-a-crash.md): 0 done; 1 an error a user can fix (bad data, a refused
checkpoint, a folder in use, a non-finite loss, a failed save), one line on stderr, no
traceback (in a distributed job, only the process it happened on says it); 2 an option value
that cannot work, one line, nothing written; 128 + signal number
after a stop request (130 Ctrl-C, 143 SIGTERM); 130 after an immediate second Ctrl-C.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable, Sequence

from common.errors import EXIT_BAD_OPTIONS, EXIT_DONE, EXIT_ERROR, USER_ERRORS, DataError, OptionError
from common.parallel.distributed import is_peer_failure, torchrun_environment
from common.training.stopping import TrainingInterrupted


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad option is ONE line on stderr (no usage block) and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_BAD_OPTIONS, f"{self.prog}: error: {message} (see --help)\n")


def run_script(
    prog: str,
    parse: Callable[[Sequence[str] | None], tuple[Any, list[str]]],
    train: Callable[[Any, list[str]], Any],
    argv: Sequence[str] | None = None,
    errors: tuple[type[BaseException], ...] = (),
) -> int:
    """Parse the options, run `train` (a training, or any command), and turn its outcome into
    an exit code (see above); `errors` are more exception types reported as one line, exit 1.
    argparse's own exits (a bad value: 2; --help: 0) become the return value too."""
    try:
        try:
            options, messages = parse(argv)
        except SystemExit as exit_request:
            return int(exit_request.code or 0)
        train(options, messages)
    except TrainingInterrupted as stopped:
        return stopped.exit_code
    except KeyboardInterrupt:
        print("interrupted: stopped at once; the files are as the last save left them", file=sys.stderr)
        return 130
    except OptionError as error:
        say(f"{prog}: error: {error}", error)
        return EXIT_BAD_OPTIONS
    except (*USER_ERRORS, *errors) as error:
        say(f"error: {error}", error)
        return EXIT_ERROR
    except OSError as error:
        where = f"{error.filename}: " if error.filename else ""
        say(f"error: {where}{error.strerror or error}", error)
        return EXIT_ERROR
    except RuntimeError as error:
        if not is_peer_failure(error):
            raise
        return EXIT_ERROR  # another process of the job failed and said why; torchrun ends the job
    return EXIT_DONE


def say(line: str, error: BaseException) -> None:
    """One line on stderr. In a distributed job every process meets the same option, checkpoint
    or folder error: only process 0 says it; a bad data file is said by the process that read it."""
    environment = torchrun_environment()
    if environment is None or environment[0] == 0 or isinstance(error, DataError):
        print(line, file=sys.stderr)
