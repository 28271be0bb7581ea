"""Fixtures of the data validation tests (helpers in validation_fixtures.py)."""

import os

import pytest
from validation_fixtures import balanced, run_validation, write_span

from siamese_tfx.components.pair_example_gen import sampling


@pytest.fixture(scope="session")
def label_two_run(tmp_path_factory):
    """A run on examples whose train split holds a label 2: (workdir, summary, error)."""
    workdir = str(tmp_path_factory.mktemp("label_two"))
    labels = {sampling.TRAIN: balanced(15) + [2] + balanced(4), sampling.EVAL: balanced(8)}
    span = write_span(os.path.join(workdir, "span"), labels, (16, 16))
    summary, error = run_validation(span, workdir, with_transform=True)
    return workdir, summary, error
