"""What the command line does when an expected failure happens: the exit codes `siamese-tfx
--help` documents, and the exceptions that carry them from wherever the failure is found (a
component's executor, a Beam worker, the serving client) to the command line, which prints the
message alone; the traceback goes to the log file (`--debug` prints it too).

An exception of any other type is a bug or an environment failure: exit code 1, with the
traceback in the log.
"""

from __future__ import annotations

import enum
from typing import Iterator, Optional


class ExitCode(enum.IntEnum):
    OK = 0
    UNEXPECTED = 1  # a bug or an environment failure: the traceback is in the log file
    USAGE = 2  # a bad option value, or a file or folder that does not exist
    NOT_PUSHED = 3  # the pipeline finished and pushed no model (not blessed)
    QUERIES_FAILED = 4  # the demo's queries were not all answered
    BAD_DATA = 5  # input rejected: quarantine limit, manifest format, too few images, anomalies
    SERVER_UNREACHABLE = 6  # no model server answered at the address (or in time)
    NOT_SERVED = 7  # the server answered: no such model or version, none available, or refused


EXIT_CODE_HELP = {
    ExitCode.OK: "success",
    ExitCode.UNEXPECTED: "unexpected error (a bug or the environment); the traceback is in the "
    "log file named on stderr, and --debug prints it",
    ExitCode.USAGE: "bad option value, or a file or folder that does not exist",
    ExitCode.NOT_PUSHED: "the pipeline ran to the end but pushed no model (not blessed)",
    ExitCode.QUERIES_FAILED: "the demo's queries were not all answered",
    ExitCode.BAD_DATA: "input data rejected: quarantine limit exceeded, manifest format, fewer "
    "images or pairs than asked for, data anomalies",
    ExitCode.SERVER_UNREACHABLE: "the model server is unreachable or did not answer in time",
    ExitCode.NOT_SERVED: "the server has no such model or version (or none available), or "
    "refused the request",
}


class ExpectedError(Exception):
    """A failure the user can fix, with its exit code. The message alone is printed: it must
    name the file, field or value at fault and what to do.

    Subclasses take one message argument, so Beam can re-raise them from a worker with its
    step name appended and keep the type."""

    exit_code: ExitCode = ExitCode.UNEXPECTED


class UsageError(ExpectedError, ValueError):
    exit_code = ExitCode.USAGE


class DataError(ExpectedError, ValueError):
    exit_code = ExitCode.BAD_DATA


class ServerUnreachable(ExpectedError):
    exit_code = ExitCode.SERVER_UNREACHABLE


class NotServed(ExpectedError):
    exit_code = ExitCode.NOT_SERVED


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[Optional[BaseException]] = [error]
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [e.__cause__, e.__context__]


def expected_failure(error: BaseException) -> Optional[ExpectedError]:
    """The ExpectedError that `error` is, or was raised from or while handling; else None."""
    return next((e for e in _chain(error) if isinstance(e, ExpectedError)), None)
