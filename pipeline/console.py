"""What a person sees on the terminal, and what goes to the command's log file.

The terminal gets the project's own lines: progress, summaries, the project's own log records
(INFO and above, from siamese_tfx's modules) and one clear line per error. Everything else goes
to the log file: other libraries' log records and Python warnings, and whatever TensorFlow's C++
runtime, absl, Beam and worker processes write straight to the process's stderr (file
descriptor 2 is pointed at the log file for the command's duration; the terminal's stderr is
kept for the project's own lines). Tracebacks go to the log file; `--debug` prints them too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import time
import traceback
import warnings
from typing import Iterator, Optional, TextIO

# Where the project's own code lives: this folder's siblings (installed: siamese_tfx/<folder>;
# an editable install maps them onto the repo's folders).
_BASE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_OWN_ROOTS = tuple(os.path.join(_BASE, folder) + os.sep
                   for folder in ("components", "kubeflow", "pipeline", "serving"))
_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(filename)s:%(lineno)d] %(message)s"


def is_own(record: logging.LogRecord) -> bool:
    """Whether a log record comes from siamese_tfx's own code (by the file that logged it)."""
    return os.path.abspath(record.pathname).startswith(_OWN_ROOTS)


class _OwnRecords(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return is_own(record) and getattr(record, "terminal", True)


def default_log_path(command: str, output_dir: Optional[str]) -> str:
    """`<output-dir>/logs/<command>-<time>.log` for commands with an output folder, else a file
    under the temp folder's `siamese-tfx-logs/`."""
    folder = (os.path.join(os.path.abspath(output_dir), "logs") if output_dir
              else os.path.join(tempfile.gettempdir(), "siamese-tfx-logs"))
    return os.path.join(folder, f"{command}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log")


class Console:
    """The terminal's stderr, kept while fd 2 points at the log file."""

    def __init__(self, terminal: TextIO, log_path: str, debug: bool):
        self.terminal = terminal
        self.log_path = log_path
        self.debug = debug

    def error(self, message: str) -> None:
        print(f"error: {message}", file=self.terminal, flush=True)

    def report_exception(self, error: BaseException, message: str, expected: bool) -> None:
        """The message on the terminal, the traceback in the log (and on the terminal with
        --debug)."""
        text = "".join(traceback.format_exception(error))
        logging.getLogger("siamese_tfx").error(
            "%s failure: %s\n%s", "expected" if expected else "unexpected", message, text,
            extra={"terminal": False})
        self.error(message)
        if self.debug:
            print(text, file=self.terminal, end="", flush=True)
        else:
            print(f"(details and the traceback: {self.log_path}; --debug prints the traceback)",
                  file=self.terminal, flush=True)


@contextlib.contextmanager
def redirected(log_path: str, debug: bool = False) -> Iterator[Console]:
    """For the duration: fd 2 (C++ and child-process output) goes to `log_path`, and so do
    Python warnings and log records; the project's own INFO+ records also go to the terminal's
    stderr, which `sys.stderr` becomes (the project's own error lines); yields the Console that
    writes to the terminal."""
    os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
    sys.stderr.flush()
    saved_fd = os.dup(2)
    terminal = os.fdopen(os.dup(saved_fd), "w", buffering=1)
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log_fd, 2)
    os.close(log_fd)

    root = logging.getLogger()
    file_handler = logging.FileHandler(log_path)
    file_handler.setFormatter(logging.Formatter(_LOG_FORMAT))
    file_handler.setLevel(logging.DEBUG if debug else logging.INFO)
    console_handler = logging.StreamHandler(terminal)
    console_handler.addFilter(_OwnRecords())
    console_handler.setLevel(logging.DEBUG if debug else logging.INFO)
    console_handler.setFormatter(logging.Formatter("%(message)s"))
    previous_level = root.level
    root.addHandler(file_handler)
    root.addHandler(console_handler)
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    logging.captureWarnings(True)
    warnings.simplefilter("default")  # each warning once per location, into the log
    previous_stderr, sys.stderr = sys.stderr, terminal
    try:
        yield Console(terminal, log_path, debug)
    finally:
        sys.stderr = previous_stderr
        logging.captureWarnings(False)
        root.removeHandler(file_handler)
        root.removeHandler(console_handler)
        root.setLevel(previous_level)
        file_handler.close()
        sys.stderr.flush()
        os.dup2(saved_fd, 2)
        os.close(saved_fd)
        terminal.close()
