"""Test-wide setup: CPU only, Keras 2 for TFX, fixed seeds, and the shared real datasets."""

import os
import random
import sys

# Must precede any TensorFlow import (TFX 1.16 on TF 2.16 needs Keras 2).
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

# The project is imported as the installed package (`siamese_tfx.<folder>`), never as the repo's
# folders: `python -m pytest` puts the working directory on sys.path, which would let a stray
# `import pipeline` pass here and fail for every user of the installed package.
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _REPO]

SHARED_DATA = os.environ.get(
    "SIAMESE_TFX_SHARED_DATA",
    os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"),
)
OMNIGLOT_ZIPS = [
    os.path.join(SHARED_DATA, "omniglot", f"images_background_small{i}.zip") for i in (1, 2)
]


@pytest.fixture(autouse=True)
def _seed():
    random.seed(0)
    np.random.seed(0)


def _require(paths):
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        message = f"shared dataset not found: {missing} (set SIAMESE_TFX_SHARED_DATA)"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI runs with ../shared beside the clone")
        pytest.skip(message)


@pytest.fixture(scope="session")
def omniglot_tiny(tmp_path_factory) -> str:
    """8 Omniglot characters (2 alphabets x 4), 10 drawers each: <alphabet>/<character>/."""
    from siamese_tfx.pipeline.datasets import extract_omniglot

    _require(OMNIGLOT_ZIPS)
    return extract_omniglot(
        OMNIGLOT_ZIPS, str(tmp_path_factory.mktemp("omniglot")),
        alphabets=["Greek", "Korean"], characters_per_alphabet=4, drawers=10,
    )


@pytest.fixture(scope="session")
def path_without_dot(tmp_path_factory) -> str:
    """A PATH with every program of this one except Graphviz's `dot` (a machine without
    Graphviz): one folder of links to them."""
    folder = tmp_path_factory.mktemp("bin_without_dot")
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        if not os.path.isdir(directory):
            continue
        for name in os.listdir(directory):
            source = os.path.join(directory, name)
            if (name != "dot" and not (folder / name).exists() and os.path.isfile(source)
                    and os.access(source, os.X_OK)):
                (folder / name).symlink_to(source)
    assert not (folder / "dot").exists()
    return str(folder)
