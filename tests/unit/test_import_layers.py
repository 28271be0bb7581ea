"""The one direction of imports (pyproject.toml's [tool.importlinter] contracts) holds for the
tree, and each contract catches the wrong-way import it exists to stop.

The checks run import-linter itself (the `lint-imports` the test extra installs) on the repo's
folders as the installed namespace `siamese_tfx.<folder>`; the failing cases run it on a copy of
the tree with one import line added."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FOLDERS = ("pipeline", "components", "serving", "kubeflow")
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _lint(root: Path, tree: Path) -> subprocess.CompletedProcess:
    """lint-imports with `root`'s pyproject.toml, importing siamese_tfx from `tree`."""
    env = dict(os.environ, PYTHONPATH=str(tree), COLUMNS="300")  # one line per contract
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)


def _namespace(tmp_path: Path) -> Path:
    """A siamese_tfx/ namespace whose folders are the repo's own (as the wheel installs them)."""
    tree = tmp_path / "tree"
    (tree / "siamese_tfx").mkdir(parents=True)
    for folder in FOLDERS:
        (tree / "siamese_tfx" / folder).symlink_to(REPO / folder)
    return tree


def test_the_tree_keeps_every_contract(tmp_path):
    result = _lint(REPO, _namespace(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 6 kept, 0 broken." in result.stdout


CONTRACT_LEAF = "The contract imports nothing of the project"
COMPONENTS_APART = "Components stand on the contract, independently of each other"
NO_ORCHESTRATION = "Components (Beam workers, Trainer pods) never import the orchestration"
SERVING_ON_CONTRACT = "Serving depends only on the contract"
PIPELINE_NOT_KUBEFLOW = "The pipeline and its local runner do not depend on the Kubeflow runner"
NO_CLI = "Nothing imports the CLI"

# (file that gains the import, the import, the contracts that must break)
WRONG_WAY = [
    ("components/contract/features.py", "import siamese_tfx.serving.requests", {CONTRACT_LEAF}),
    ("components/trainer/train.py", "import siamese_tfx.pipeline.config", {NO_ORCHESTRATION}),
    ("components/transform/preprocessing.py", "import siamese_tfx.components.trainer.losses",
     {COMPONENTS_APART}),
    # Serving reaching into the Trainer also makes the infra validator (which uses serving's
    # warmup) depend on the Trainer indirectly: both contracts see it.
    ("serving/warmup.py", "import siamese_tfx.components.trainer.export",
     {SERVING_ON_CONTRACT, COMPONENTS_APART}),
    # GalleryBuilder stands on the trainer's gallery code, never the other way round.
    ("components/trainer/gallery.py", "import siamese_tfx.components.gallery_builder.executor",
     {COMPONENTS_APART}),
    ("pipeline/pipeline.py", "import siamese_tfx.kubeflow.config", {PIPELINE_NOT_KUBEFLOW}),
    ("kubeflow/runner.py", "import siamese_tfx.pipeline.cli", {NO_CLI}),
]


@pytest.mark.parametrize("path,line,contracts", WRONG_WAY, ids=[w[0] for w in WRONG_WAY])
def test_a_wrong_way_import_breaks_its_contract(tmp_path, path, line, contracts):
    copy = tmp_path / "copy"
    (copy / "siamese_tfx").mkdir(parents=True)
    for folder in FOLDERS:
        shutil.copytree(REPO / folder, copy / "siamese_tfx" / folder,
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", copy / "pyproject.toml")
    target = copy / "siamese_tfx" / path
    target.write_text(target.read_text() + f"\n{line}  # the wrong way\n")

    result = _lint(copy, copy)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{6 - len(contracts)} kept, {len(contracts)} broken." in result.stdout, result.stdout
    broken = {name for name in (CONTRACT_LEAF, COMPONENTS_APART, NO_ORCHESTRATION,
                                SERVING_ON_CONTRACT, PIPELINE_NOT_KUBEFLOW, NO_CLI)
              if any(row.startswith(name) and " BROKEN" in row
                     for row in result.stdout.splitlines())}
    assert broken == contracts, result.stdout
    module = "siamese_tfx." + path[:-len(".py")].replace("/", ".")
    assert f"{module} -> {line.split()[1]}" in result.stdout  # names the offending import
