"""Server pieces that the conformance suite cannot reach over the wire."""

from __future__ import annotations

import socket

import grpc
import pytest
from serving_fixtures import needs_local_server

from siamese_tfx.serving.config import ServerConfig
from siamese_tfx.serving.server import _answer, start_server


class _Aborted(Exception):
    pass


class _FakeContext:
    def __init__(self, remaining: float | None, active: bool = True) -> None:
        self.remaining = remaining
        self.active = active
        self.aborted: tuple[grpc.StatusCode, str] | None = None

    def time_remaining(self) -> float | None:
        return self.remaining

    def is_active(self) -> bool:
        return self.active

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.aborted = (code, details)
        raise _Aborted()


def test_request_whose_deadline_passed_in_the_queue_is_not_run():
    context = _FakeContext(remaining=-0.5)
    ran = []

    with pytest.raises(_Aborted):
        _answer(context, lambda: ran.append(1))

    assert ran == []
    assert context.aborted[0] == grpc.StatusCode.DEADLINE_EXCEEDED


def test_request_cancelled_in_the_queue_is_not_run():
    context = _FakeContext(remaining=5.0, active=False)
    ran = []

    with pytest.raises(_Aborted):
        _answer(context, lambda: ran.append(1))

    assert ran == []
    assert context.aborted[0] == grpc.StatusCode.CANCELLED


def test_a_crash_in_a_handler_answers_internal():
    context = _FakeContext(remaining=None)

    with pytest.raises(_Aborted):
        _answer(context, lambda: 1 / 0)

    assert context.aborted[0] == grpc.StatusCode.INTERNAL
    assert "ZeroDivisionError" in context.aborted[1]


def test_handler_result_is_returned_within_its_deadline():
    assert _answer(_FakeContext(remaining=3.0), lambda: "answer") == "answer"


@pytest.mark.parametrize(
    "overrides",
    [{"poll_interval_s": 0}, {"max_workers": 0}, {"max_message_bytes": 10}, {"port": 70000},
     {"max_batch_size": 0}, {"batch_chunk_size": 0}],
)
def test_config_rejects_nonsense(overrides):
    with pytest.raises(ValueError):
        ServerConfig(model_base="/nonexistent", **overrides)


def test_busy_port_is_an_error(models):
    needs_local_server()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = ServerConfig(model_base=models.model_base, model_name=models.model_name, port=port)
        with pytest.raises(OSError, match="could not bind"):
            start_server(config)


def test_stop_is_idempotent(models):
    needs_local_server()
    config = ServerConfig(model_base=models.model_base, model_name=models.model_name, port=0)
    server = start_server(config)
    assert not server.wait(timeout=0.1)
    server.stop(grace_s=0.5)
    server.stop()

    assert server.wait(timeout=1)
