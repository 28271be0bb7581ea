"""Fixtures of the serving conformance suite.

Three modes, chosen by environment variables:
- default: two tiny SavedModels with the served contract are built once per session and served by
  `serving.server` on 127.0.0.1, port 0, one server per test module.
- SIAMESE_TFX_SERVING_MODEL_BASE (with SIAMESE_TFX_SERVING_MODEL, default "siamese"): the local
  server serves the models Pusher wrote there instead (read only; tests that push versions copy
  them into a temp folder first).
- SIAMESE_TFX_SERVING_ADDRESS (host:port, with SIAMESE_TFX_SERVING_MODEL): the suite talks to that
  server (e.g. the real TF Serving) through public gRPC APIs only and starts no server; tests that
  need the local server's process or folder are skipped. When SIAMESE_TFX_SERVING_MODEL_BASE is
  set too, it must be the base that server reads; it is used for in-process reference results.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from typing import Callable, Iterator

import pytest
import serving_fixtures as fx
from serving_fixtures import needs_local_server, remote_address

MODEL_ENV = "SIAMESE_TFX_SERVING_MODEL"
MODEL_BASE_ENV = "SIAMESE_TFX_SERVING_MODEL_BASE"


@dataclass(frozen=True)
class Models:
    """The SavedModel versions the suite serves (or that the remote server reads)."""

    model_base: str | None
    model_name: str
    versions: dict[int, str]

    @property
    def newest(self) -> str:
        return self.versions[max(self.versions)]


@dataclass
class Target:
    """Where the suite sends requests: a local server it started, or a remote one."""

    address: str
    model_name: str
    server: object | None

    @property
    def is_local(self) -> bool:
        return self.server is not None


@pytest.fixture(scope="session")
def images() -> list[bytes]:
    """Six random images: PNG, JPEG, BMP, GIF, PNG, JPEG, of differing sizes."""
    return fx.encoded_images(6)


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory, images: list[bytes]) -> Models:
    name = os.environ.get(MODEL_ENV, "siamese")
    base = os.environ.get(MODEL_BASE_ENV)
    if base:
        model_dir = os.path.join(base, name)
        versions = {
            int(v): os.path.join(model_dir, v)
            for v in os.listdir(model_dir)
            if v.isdigit() and os.path.isfile(os.path.join(model_dir, v, "saved_model.pb"))
        }
        if not versions:
            pytest.fail(f"{MODEL_BASE_ENV}={base} holds no version of model {name}")
        return Models(base, name, versions)
    if remote_address():
        return Models(None, name, {})
    from siamese_tfx.serving.warmup import write_warmup_requests

    base = str(tmp_path_factory.mktemp("fixture_models"))
    versions = {}
    for version, threshold in ((1, 0.6), (2, 0.5)):
        path = fx.version_dir(base, name, version)
        fx.build_model(path, seed=version, threshold=threshold)
        write_warmup_requests(path, name, images[:3])
        versions[version] = path
    return Models(base, name, versions)


@pytest.fixture(scope="module")
def target(models: Models) -> Iterator[Target]:
    """The server under test; a local one serves the two newest versions."""
    address = remote_address()
    if address:
        yield Target(address, models.model_name, None)
        return
    from siamese_tfx.serving.config import ServerConfig
    from siamese_tfx.serving.server import start_server

    handle = start_server(
        ServerConfig(
            model_base=models.model_base,
            model_name=models.model_name,
            port=0,
            num_versions=2,
            poll_interval_s=1.0,
            max_workers=4,
        )
    )
    try:
        yield Target(handle.address, models.model_name, handle)
    finally:
        handle.stop(grace_s=1.0)


@pytest.fixture(scope="module")
def client(target: Target):
    from siamese_tfx.serving.client import SiameseClient

    with SiameseClient(target.address, target.model_name, timeout=30.0) as c:
        yield c


@pytest.fixture(scope="session")
def reference(models: Models) -> Callable[[int], object]:
    """Loads a version's SavedModel in process (cached); skips when its folder is unknown."""
    cache: dict[int, object] = {}

    def load(version: int):
        if version not in models.versions:
            pytest.skip(f"version {version} is not readable here (set {MODEL_BASE_ENV})")
        if version not in cache:
            import tensorflow as tf

            cache[version] = tf.saved_model.load(models.versions[version])
        return cache[version]

    return load


class WritableBase:
    """A fresh model base in a temp folder, where tests push versions as Pusher would."""

    def __init__(self, path: str, models: Models) -> None:
        self.path = path
        self.models = models

    def push(
        self,
        source_version: int,
        as_version: int,
        prepare: Callable[[str], None] | None = None,
    ) -> str:
        """Copies source version `source_version` to `<path>/<name>/<as_version>`.

        Without `prepare` the copy lands in place file by file (a slow Pusher); with it, the copy
        is staged, `prepare(staged_dir)` edits it, and one rename publishes it.
        """
        destination = fx.version_dir(self.path, self.models.model_name, as_version)
        if prepare is None:
            shutil.copytree(self.models.versions[source_version], destination)
            return destination
        staged = os.path.join(self.path, f".staging-{as_version}")
        shutil.copytree(self.models.versions[source_version], staged)
        prepare(staged)
        os.makedirs(os.path.dirname(destination), exist_ok=True)
        os.rename(staged, destination)
        return destination

    def push_broken(self, version: int) -> str:
        """A version folder whose saved_model.pb is garbage."""
        destination = fx.version_dir(self.path, self.models.model_name, version)
        os.makedirs(destination)
        with open(os.path.join(destination, "saved_model.pb"), "wb") as f:
            f.write(b"this is not a SavedModel protocol buffer")
        return destination


@pytest.fixture
def writable_base(models: Models, tmp_path) -> WritableBase:
    """An empty model base for tests that push versions (local server only)."""
    needs_local_server()
    path = tmp_path / "model_base"
    path.mkdir()
    return WritableBase(str(path), models)
