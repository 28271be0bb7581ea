"""The `siamese-tfx` command line: one argparse tree for every command.

Subcommands register themselves through a `register(subparsers)` function of their module, so
each command's options sit beside the code that uses them.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from typing import Sequence


def _configure_runtime() -> None:
    # TFX 1.16 on TF 2.16 needs Keras 2 (tf-keras); this must be set before TensorFlow loads.
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # google-api-core warns on import about Python 3.11's end of life, once per package.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"google\.api_core\..*")


# Commands that keep their stderr: `serve`'s log is the server's log (what a container
# platform collects); `--help`-only and spec-writing commands load no heavy library.
_OWN_STDERR = ("serve",)


def _epilog() -> str:
    from siamese_tfx.components.contract.errors import EXIT_CODE_HELP

    lines = [f"  {int(code)}  {text}" for code, text in EXIT_CODE_HELP.items()]
    return "exit codes:\n" + "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    from siamese_tfx.kubeflow import cli as kubeflow_cli
    from siamese_tfx.pipeline import commands, data_report, describe, gallery, quality
    from siamese_tfx.serving import cli as serving_cli

    parser = argparse.ArgumentParser(
        prog="siamese-tfx",
        description="Train, validate, push and serve a Siamese image-similarity model with TFX.",
        epilog=_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.register(subparsers)
    data_report.register(subparsers)
    quality.register(subparsers)
    describe.register(subparsers)
    gallery.register(subparsers)
    serving_cli.register(subparsers)
    kubeflow_cli.register(subparsers)
    for name, sub in subparsers.choices.items():
        if sub.epilog is None:
            sub.epilog = _epilog()
            sub.formatter_class = argparse.RawDescriptionHelpFormatter
        if name in _OWN_STDERR:
            continue
        sub.add_argument(
            "--debug", action="store_true",
            help="On failure, print the traceback too (it always goes to the log file), and "
            "log DEBUG records.")
        sub.add_argument(
            "--log-file", default=None,
            help="Where other libraries' output, warnings and tracebacks go (default: "
            "<output-dir>/logs/<command>-<time>.log, or the temp folder's siamese-tfx-logs/).")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    _configure_runtime()
    parser = build_parser()
    args = parser.parse_args(argv)  # a bad option: usage and exit code 2, as argparse does
    if args.command in _OWN_STDERR:
        return int(args.func(args) or 0)
    from siamese_tfx.components.contract import errors
    from siamese_tfx.pipeline import console

    if not args.log_file:
        args.log_file = console.default_log_path(args.command, getattr(args, "output_dir", None))
    with console.redirected(args.log_file, args.debug) as term:
        try:
            return int(args.func(args) or 0)
        except KeyboardInterrupt:
            term.error("interrupted")
            return 130
        except Exception as e:  # noqa: BLE001 - every failure ends with a message and a code.
            failure = errors.expected_failure(e)
            if failure is not None:
                term.report_exception(e, str(failure), expected=True)
                return int(failure.exit_code)
            term.report_exception(e, f"unexpected {type(e).__name__}: {e}", expected=False)
            return int(errors.ExitCode.UNEXPECTED)


if __name__ == "__main__":
    sys.exit(main())
