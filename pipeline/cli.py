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


def build_parser() -> argparse.ArgumentParser:
    from siamese_tfx.kubeflow import cli as kubeflow_cli
    from siamese_tfx.pipeline import commands, data_report, describe, gallery, quality
    from siamese_tfx.serving import cli as serving_cli

    parser = argparse.ArgumentParser(
        prog="siamese-tfx",
        description="Train, validate, push and serve a Siamese image-similarity model with TFX.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.register(subparsers)
    data_report.register(subparsers)
    quality.register(subparsers)
    describe.register(subparsers)
    gallery.register(subparsers)
    serving_cli.register(subparsers)
    kubeflow_cli.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    _configure_runtime()
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
