"""Version discovery, hot reload under load, failed loads and warmup replay of the local server.

These tests push versions into a model folder, so they need the local server (they are skipped
when SIAMESE_TFX_SERVING_ADDRESS points the suite at a remote server).
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from typing import Callable

import grpc
import numpy as np
import pytest

from siamese_tfx.serving.client import ServingError, SiameseClient
from siamese_tfx.serving.config import ServerConfig
from siamese_tfx.serving.requests import bytes_tensor_proto
from siamese_tfx.serving.server import start_server
from siamese_tfx.serving.warmup import read_warmup_requests, write_warmup_requests

pytestmark = pytest.mark.slow


def _wait_for(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def _start(base, **overrides):
    config = dict(
        model_base=base.path, model_name=base.models.model_name, port=0, poll_interval_s=0.2
    )
    config.update(overrides)
    return start_server(ServerConfig(**config))


def _states(client: SiameseClient) -> dict[int, object]:
    return {s.version: s for s in client.status()}


def _state(client: SiameseClient, version: int) -> str | None:
    status = _states(client).get(version)
    return None if status is None else status.state


class _Hammer:
    """Client threads sending `compare` requests without pause until stopped (bounded)."""

    def __init__(self, address: str, model_name: str, images: list[bytes], threads: int = 2):
        self.versions: list[list[int]] = [[] for _ in range(threads)]
        self.errors: list[ServingError] = []
        self._stop = threading.Event()
        inputs = {
            "left_image": bytes_tensor_proto(images[:3]),
            "right_image": bytes_tensor_proto(images[1:4]),
        }

        def run(seen: list[int]) -> None:
            with SiameseClient(address, model_name, timeout=30.0, retries=0) as client:
                for _ in range(20_000):
                    if self._stop.is_set():
                        return
                    try:
                        response = client.predict("compare", inputs)
                    except ServingError as e:
                        self.errors.append(e)
                        continue
                    seen.append(response.model_spec.version.value)

        self._threads = [threading.Thread(target=run, args=(v,)) for v in self.versions]
        for thread in self._threads:
            thread.start()

    def count(self) -> int:
        return sum(len(v) for v in self.versions)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)
            assert not thread.is_alive()


def test_new_version_is_swapped_in_under_load_and_a_broken_one_is_not(
    writable_base, images, reference, caplog
):
    caplog.set_level(logging.INFO, logger="siamese_tfx.serving")
    sources = sorted(writable_base.models.versions)
    old_source, new_source = sources[-2] if len(sources) > 1 else sources[-1], sources[-1]
    writable_base.push(old_source, 1)
    server = _start(writable_base)
    hammer = None
    try:
        client = SiameseClient(server.address, writable_base.models.model_name, timeout=30.0)
        hammer = _Hammer(server.address, writable_base.models.model_name, images)
        _wait_for(lambda: hammer.count() >= 10, "first answers")

        writable_base.push(new_source, 2)
        _wait_for(
            lambda: all(v and v[-1] == 2 for v in hammer.versions), "answers from version 2"
        )
        states = _states(client)
        assert states[2].state == "AVAILABLE"
        assert states[1].state == "END" and states[1].error_code == "OK"
        assert client.metadata().version == 2
        embeddings = client.embed(images)
        import tensorflow as tf

        expected = reference(new_source).signatures["embed"](image=tf.constant(images))
        np.testing.assert_allclose(embeddings, expected["embedding"].numpy(), atol=1e-5)

        writable_base.push_broken(3)
        _wait_for(lambda: _state(client, 3) == "END", "version 3 to fail")
        failed = _states(client)[3]
        assert failed.error_code != "OK" and failed.error_message
        before = hammer.count()
        _wait_for(lambda: hammer.count() >= before + 20, "answers after the failed load")
        assert _states(client)[2].state == "AVAILABLE"
        assert client.compare(images[0], images[0]).match
        assert client.last_version == 2
    finally:
        if hammer is not None:
            hammer.stop()
        server.stop(grace_s=1.0)

    assert hammer.errors == []
    for seen in hammer.versions:
        assert seen[0] == 1 and seen[-1] == 2
        assert seen == sorted(seen), "a request was answered by an older version after a newer"
    errors = [r.message for r in caplog.records if r.levelno == logging.ERROR]
    assert any("version 3" in message for message in errors), "version 3's failure was not logged"


def test_a_fixed_version_folder_is_loaded_again(writable_base):
    newest = max(writable_base.models.versions)
    writable_base.push(newest, 1)
    broken = writable_base.push_broken(2)
    with _start(writable_base) as server:
        client = SiameseClient(server.address, writable_base.models.model_name, timeout=30.0)
        assert _states(client)[2].state == "END" and _states(client)[2].error_code != "OK"
        assert server.manager.served_versions() == [1]

        shutil.rmtree(broken)
        writable_base.push(newest, 2)
        _wait_for(lambda: server.manager.served_versions() == [2], "the fixed version 2")
        assert _states(client)[2].state == "AVAILABLE"
        assert _states(client)[2].error_code == "OK"


@pytest.mark.parametrize("folder", ["99999999999999999999", "\u00b2"], ids=["int64_overflow",
                                                                         "superscript_two"])
def test_folders_that_are_not_versions_are_ignored_and_logged_once(
    writable_base, images, folder, caplog
):
    """TF Serving's versions are ASCII-digit names that fit an int64: a valid model in a folder
    named 99999999999999999999 (past int64) or "\u00b2" (str.isdigit() takes it) is no version."""
    caplog.set_level(logging.INFO, logger="siamese_tfx.serving")
    newest = max(writable_base.models.versions)
    writable_base.push(newest, 1)
    model_dir = os.path.join(writable_base.path, writable_base.models.model_name)
    shutil.copytree(writable_base.models.versions[newest], os.path.join(model_dir, folder))

    with _start(writable_base) as server:  # a fresh start with the folder there
        client = SiameseClient(server.address, writable_base.models.model_name, timeout=30.0)
        assert client.compare(images[0], images[0]).match and client.last_version == 1
        assert [s.version for s in client.status()] == [1]

        writable_base.push(newest, 2)  # hot reload goes on
        _wait_for(lambda: server.manager.served_versions() == [2], "version 2")
        time.sleep(1.0)  # a few more polls of the folder
        assert client.compare(images[0], images[0]).match and client.last_version == 2
        assert [(s.version, s.state) for s in client.status()] == [(2, "AVAILABLE"), (1, "END")]

    ignored = [r for r in caplog.records if "not a version folder" in r.getMessage()]
    assert len(ignored) == 1 and folder in ignored[0].getMessage()


def test_server_waits_for_a_first_version(writable_base):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with _start(writable_base) as server:
        client = SiameseClient(server.address, writable_base.models.model_name, timeout=30.0)
        with pytest.raises(ServingError) as raised:
            client.status()
        assert raised.value.code == grpc.StatusCode.NOT_FOUND
        with grpc.insecure_channel(server.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            request = health_pb2.HealthCheckRequest(service="")
            not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
            assert health.Check(request, timeout=10).status == not_serving

            writable_base.push(max(writable_base.models.versions), 7)
            _wait_for(lambda: server.manager.served_versions() == [7], "version 7")
            serving = health_pb2.HealthCheckResponse.SERVING
            assert health.Check(request, timeout=10).status == serving
        assert _states(client)[7].state == "AVAILABLE"


def test_warmup_requests_are_replayed_before_a_version_serves(writable_base, images, caplog):
    caplog.set_level(logging.INFO, logger="siamese_tfx.serving")
    name = writable_base.models.model_name

    def add_warmup(path: str) -> None:
        write_warmup_requests(path, name, images[:4])

    path = writable_base.push(max(writable_base.models.versions), 1, prepare=add_warmup)
    records = read_warmup_requests(f"{path}/assets.extra/tf_serving_warmup_requests")

    with _start(writable_base) as server:
        assert server.manager.get(1).warmup_requests_replayed == len(records) == 4

    assert any("replayed 4 warmup requests" in r.message for r in caplog.records)


def test_version_whose_warmup_fails_is_not_served(writable_base, images):
    name = writable_base.models.model_name
    newest = max(writable_base.models.versions)
    writable_base.push(newest, 1)
    with _start(writable_base) as server:
        client = SiameseClient(server.address, name, timeout=30.0)

        writable_base.push(
            newest, 2, prepare=lambda p: write_warmup_requests(p, name, [b"not an image"])
        )
        _wait_for(lambda: _state(client, 2) == "END", "version 2 to fail")

        failed = _states(client)[2]
        assert failed.error_code == "INVALID_ARGUMENT"
        assert "warmup" in failed.error_message
        assert server.manager.served_versions() == [1]
        assert client.compare(images[0], images[0]).match and client.last_version == 1


def test_warmup_can_be_switched_off(writable_base, images):
    name = writable_base.models.model_name
    writable_base.push(
        max(writable_base.models.versions),
        1,
        prepare=lambda p: write_warmup_requests(p, name, [b"not an image"]),
    )
    with _start(writable_base, warmup=False) as server:
        assert server.manager.served_versions() == [1]
        assert server.manager.get(1).warmup_requests_replayed == 0
