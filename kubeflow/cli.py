"""`siamese-tfx kubeflow ...` commands."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds the `kubeflow` command group (filled in by the Kubeflow runner)."""
