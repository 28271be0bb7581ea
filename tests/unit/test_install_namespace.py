"""The installed project is ONE top-level package, `siamese_tfx`: nothing generic (`pipeline`,
`kubeflow`, ...) lands in site-packages, and another distribution's `kubeflow.*` package (the
Kubeflow SDKs') still imports beside it.

Builds the real wheel from pyproject.toml (pip wheel, as `pip install .` does), installs it
with a tiny wheel of another distribution under the `kubeflow` namespace into a fresh virtualenv,
and imports from there. The fresh venv reaches this venv's third-party libraries through a .pth
line, which (unlike the site dir itself) does not run this checkout's editable-install hook."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FOLDERS = ("pipeline", "components", "serving", "kubeflow")


def _run(*argv, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=600, **kwargs)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # Built from a copy of the checkout's tracked files: setuptools builds in the source tree,
    # and a stale build/ there would hide a package missing from pyproject.toml.
    source, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("wheel")
    tracked = _run("git", "ls-files", "-z", cwd=REPO).stdout.split("\0")
    for name in filter(None, tracked):
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    result = _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out),
                  str(source))
    assert result.returncode == 0, result.stderr
    (path,) = out.glob("siamese_tfx-*.whl")
    return path


def _kubeflow_namespace_wheel(directory: Path) -> Path:
    """A minimal wheel of another distribution providing `kubeflow.training`, laid out as the
    Kubeflow SDKs are (a `kubeflow` namespace without __init__.py)."""
    name, version = "kubeflow_training_stand_in", "1.0"
    dist_info = f"{name}-{version}.dist-info"
    files = {
        "kubeflow/training/__init__.py": "WHO = 'another distribution'\n",
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist_info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                              "Tag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{path},sha256={digest.decode()},{len(text.encode())}")
    files[f"{dist_info}/RECORD"] = "\n".join(record + [f"{dist_info}/RECORD,,"]) + "\n"
    path = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for member, text in files.items():
            archive.writestr(member, text)
    return path


def test_the_wheel_holds_one_top_level_package_with_every_module(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names}
    assert top_level == {"siamese_tfx", "siamese_tfx-0.1.0.dist-info"}
    # Every module of the four folders is in the wheel (the packages list in pyproject.toml is
    # explicit, so a new subpackage left out of it would be missing from installs).
    for folder in FOLDERS:
        for source in (REPO / folder).rglob("*.py"):
            member = "siamese_tfx/" + source.relative_to(REPO).as_posix()
            assert member in names, f"{member} is not in the wheel"
    assert "siamese_tfx/components/contract/schema.pbtxt" in names
    assert not any(name.startswith("siamese_tfx/tests/") for name in names)


def test_installed_beside_another_kubeflow_distribution(wheel, tmp_path):
    venv = tmp_path / "venv"
    assert _run(sys.executable, "-m", "venv", "--without-pip", str(venv)).returncode == 0
    python = venv / "bin" / "python"
    site = Path(_run(str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                     "['purelib'])").stdout.strip())
    # This venv's libraries (TensorFlow, TFX, ...), reached without its editable hook.
    (site / "third_party.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    result = _run(sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target",
                  str(site), str(wheel), str(_kubeflow_namespace_wheel(tmp_path)))
    assert result.returncode == 0, result.stderr

    installed = sorted(p.name for p in site.iterdir() if not p.name.endswith((".pth", "-info")))
    assert installed == ["bin", "kubeflow", "siamese_tfx"]  # bin: pip --target's scripts
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    for generic in FOLDERS:
        result = _run(str(python), "-c", f"import {generic}", cwd=tmp_path, env=env)
        if generic == "kubeflow":  # the other distribution's namespace, holding only its code
            assert result.returncode == 0, result.stderr
        else:
            assert "ModuleNotFoundError" in result.stderr, (generic, result.stderr)
    check = (
        "import kubeflow, kubeflow.training, siamese_tfx.kubeflow.runner, siamese_tfx.pipeline\n"
        "print(kubeflow.training.WHO)\n"
        "print(siamese_tfx.pipeline.__file__)\n"
    )
    result = _run(str(python), "-c", check, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    who, where = result.stdout.split("\n")[:2]
    assert who == "another distribution"
    assert where.startswith(str(site))  # the installed copy, not this checkout
    result = _run(str(python), "-m", "siamese_tfx.pipeline.cli", "--help", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert "usage: siamese-tfx" in result.stdout
