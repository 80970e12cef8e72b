"""What the training scripts share on the command line: one-line option errors and exit codes.

Exit codes (README "After a crash"): 0 done; 1 an error a user can fix (bad data, a refused
checkpoint, a folder in use, a non-finite loss, a failed save), one line on stderr, no
traceback; 2 an option value that cannot work, one line, nothing written; 128 + signal number
after a stop request (130 Ctrl-C, 143 SIGTERM); 130 after an immediate second Ctrl-C.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable, Sequence

from common.errors import EXIT_BAD_OPTIONS, EXIT_DONE, EXIT_ERROR, USER_ERRORS, OptionError
from common.stopping import TrainingInterrupted


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
        print(f"{prog}: error: {error}", file=sys.stderr)
        return EXIT_BAD_OPTIONS
    except (*USER_ERRORS, *errors, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as error:
        where = f"{error.filename}: " if error.filename else ""
        print(f"error: {where}{error.strerror or error}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_DONE
