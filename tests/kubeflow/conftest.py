"""A pipeline compiled once per session through the CLI, as a user would."""

import pytest
from kubeflow_fixtures import COMPILE_ARGS


@pytest.fixture(scope="session")
def compiled_spec_path(tmp_path_factory) -> str:
    from siamese_tfx.pipeline.cli import main

    path = str(tmp_path_factory.mktemp("kubeflow") / "pipeline.yaml")
    assert main(["kubeflow", "compile", "--output", path] + COMPILE_ARGS) == 0
    return path
