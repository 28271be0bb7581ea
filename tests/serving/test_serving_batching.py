"""Server-side batching (`serve --enable-batching`, issue 16): the BatchingParameters file TF
Serving reads, and concurrent requests joined into one model call by the real server on
127.0.0.1, each answered with its own rows, deadline and error."""

from __future__ import annotations

import os
import threading
import time

import grpc
import numpy as np
import pytest
from serving_fixtures import needs_local_server, remote_address

from siamese_tfx.serving.batching import (Batcher, BatchingParameters, parse_batching_parameters,
                                          read_batching_parameters)
from siamese_tfx.serving.client import ServingError, SiameseClient
from siamese_tfx.serving.config import ServerConfig
from siamese_tfx.serving.errors import ServingStatusError
from siamese_tfx.serving.server import start_server

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEPLOY_BATCHING = os.path.join(REPO_ROOT, "serving", "deploy", "batching_parameters.txt")
# Batches of two that only run when full: two concurrent requests always share one call.
PAIRS_ONLY = "max_batch_size { value: 2 }\nbatch_timeout_micros { value: 600000000 }\n" \
             "num_batch_threads { value: 1 }\n"


def test_reads_the_deployed_batching_parameters():
    parameters = read_batching_parameters(DEPLOY_BATCHING)

    assert parameters == BatchingParameters(
        max_batch_size=32, batch_timeout_micros=2000, max_enqueued_batches=64,
        num_batch_threads=2, pad_variable_length_inputs=False)


def test_fields_left_out_keep_tf_servings_defaults():
    parameters = parse_batching_parameters("# only a comment\nmax_batch_size { value: 8 }\n")

    assert (parameters.max_batch_size, parameters.batch_timeout_micros,
            parameters.max_enqueued_batches) == (8, 0, 10)


@pytest.mark.parametrize("text, expected", [
    ("max_batch_size { value: 32 }\nmax_batch_sise { value: 4 }\n",
     'no field named "max_batch_sise"'),
    ("max_batch_size: 32\n", 'Expected "{"'),
    ("max_batch_size { value: 0 }\n", "max_batch_size must be >= 1 (got 0)"),
    ("batch_timeout_micros { value: -1 }\n", "batch_timeout_micros must be >= 0"),
    ("max_batch_size { value: 8 } allowed_batch_sizes: 4 allowed_batch_sizes: 6\n",
     "the last of allowed_batch_sizes (6) must equal max_batch_size (8)"),
])
def test_bad_batching_parameters_name_the_file_and_the_field(tmp_path, text, expected):
    path = tmp_path / "batching.txt"
    path.write_text(text)

    with pytest.raises(ValueError) as raised:
        read_batching_parameters(str(path))

    assert str(path) in str(raised.value)
    assert expected in str(raised.value)


def test_parameters_file_without_enable_batching_is_refused():
    with pytest.raises(ValueError, match="without enable_batching"):
        ServerConfig(model_base="/models", batching_parameters_file=DEPLOY_BATCHING)


def test_serve_with_a_bad_parameters_file_exits_2_naming_the_field(models, tmp_path, capsys):
    from test_serving_cli import _parser

    path = tmp_path / "batching.txt"
    path.write_text("max_batch_size { value: 32 }\nmax_latency { value: 1 }\n")
    args = _parser().parse_args(
        ["serve", "--model-base", str(tmp_path), "--enable-batching",
         "--batching-parameters-file", str(path)])

    assert args.func(args) == 2
    err = capsys.readouterr().err
    assert str(path) in err and '"max_latency"' in err


def _server(models, tmp_path, text: str):
    needs_local_server()
    path = tmp_path / "batching.txt"
    path.write_text(text)
    return start_server(ServerConfig(
        model_base=models.model_base, model_name=models.model_name, port=0, num_versions=2,
        warmup=False, enable_batching=True, batching_parameters_file=str(path)))


def _concurrently(*calls):
    """Runs each call in its own thread; their results (or the ServingError each raised)."""
    results: list[object] = [None] * len(calls)

    def run(index: int) -> None:
        try:
            results[index] = calls[index]()
        except ServingError as e:
            results[index] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


def _expected_distance(reference, version: int, left: bytes, right: bytes) -> float:
    import tensorflow as tf

    outputs = reference(version).signatures["compare"](
        left_image=tf.constant([left]), right_image=tf.constant([right]))
    return float(outputs["distance"].numpy()[0])


def test_two_concurrent_requests_share_one_model_call(models, reference, images, tmp_path):
    newest = max(models.versions)
    with _server(models, tmp_path, PAIRS_ONLY) as server:
        with SiameseClient(server.address, models.model_name, timeout=60) as client:
            first, second = _concurrently(lambda: client.compare(images[0], images[1]),
                                          lambda: client.compare(images[2], images[3]))
        calls = list(server.manager.batcher.calls)

    assert [(c.signature_name, c.requests, c.rows, c.ok) for c in calls] == [
        ("compare", 2, 2, True)]
    assert first.distance == pytest.approx(
        _expected_distance(reference, newest, images[0], images[1]), abs=1e-5)
    assert second.distance == pytest.approx(
        _expected_distance(reference, newest, images[2], images[3]), abs=1e-5)
    assert first.distance != pytest.approx(second.distance, abs=1e-5)


def test_embed_requests_are_joined_and_split_back(models, reference, images, tmp_path):
    import tensorflow as tf

    newest = max(models.versions)
    with _server(models, tmp_path, PAIRS_ONLY) as server:
        with SiameseClient(server.address, models.model_name, timeout=60) as client:
            first, second = _concurrently(lambda: client.embed([images[4]]),
                                          lambda: client.embed([images[5]]))
        calls = list(server.manager.batcher.calls)

    expected = reference(newest).signatures["embed"](image=tf.constant(images[4:6]))["embedding"]
    assert [(c.signature_name, c.requests, c.ok) for c in calls] == [("embed", 2, True)]
    np.testing.assert_allclose(np.concatenate([first, second]), expected.numpy(), atol=1e-5)


def test_a_bad_image_fails_alone_and_its_batch_mate_is_answered(models, reference, images,
                                                                 tmp_path):
    newest = max(models.versions)
    with _server(models, tmp_path, PAIRS_ONLY) as server:
        with SiameseClient(server.address, models.model_name, timeout=60, retries=0) as client:
            good, bad = _concurrently(lambda: client.compare(images[0], images[1]),
                                      lambda: client.compare(images[2], b"not an image"))
        calls = list(server.manager.batcher.calls)

    assert isinstance(bad, ServingError) and bad.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "image" in bad.details.lower()
    assert good.distance == pytest.approx(
        _expected_distance(reference, newest, images[0], images[1]), abs=1e-5)
    # The joined call failed, so each request ran alone: only the bad one failed.
    assert [(c.requests, c.ok) for c in calls[:1]] == [(2, False)]
    assert sorted((c.requests, c.ok) for c in calls[1:]) == [(1, False), (1, True)]


def test_a_request_past_its_deadline_is_dropped_from_its_batch(models, reference, images,
                                                                tmp_path):
    newest = max(models.versions)
    with _server(models, tmp_path, PAIRS_ONLY) as server:
        with SiameseClient(server.address, models.model_name, timeout=0.5, retries=0) as hasty:
            with pytest.raises(ServingError) as raised:
                hasty.compare(images[0], images[1])  # waits alone in a batch of two, times out
        assert raised.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        with SiameseClient(server.address, models.model_name, timeout=60) as patient:
            answer = patient.compare(images[2], images[3])  # fills the batch, which then runs
        calls = list(server.manager.batcher.calls)

    assert [(c.requests, c.rows, c.ok) for c in calls] == [(1, 1, True)]
    assert answer.distance == pytest.approx(
        _expected_distance(reference, newest, images[2], images[3]), abs=1e-5)


def test_a_request_above_max_batch_size_is_refused(models, images, tmp_path):
    with _server(models, tmp_path, PAIRS_ONLY) as server:
        with SiameseClient(server.address, models.model_name, timeout=60, retries=0) as client:
            with pytest.raises(ServingError) as raised:
                client.compare_many([(images[0], images[1])] * 3)
        calls = list(server.manager.batcher.calls)

    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "Task size 3 is larger than maximum input batch size 2" in raised.value.details
    assert calls == []


def test_versions_are_batched_apart(models, reference, images, tmp_path):
    oldest, newest = min(models.versions), max(models.versions)
    if oldest == newest:
        # Only a model folder given for a remote server can hold one version; the suite's own
        # always holds two.
        assert remote_address(), "the suite's own model folder must hold two versions"
        pytest.skip("needs two versions")
    with _server(models, tmp_path, PAIRS_ONLY) as server:
        clients = [SiameseClient(server.address, models.model_name, timeout=60, version=v)
                   for v in (oldest, newest, oldest, newest)]
        try:
            results = _concurrently(*[
                lambda c=c: c.compare(images[0], images[1]) for c in clients])
        finally:
            for c in clients:
                c.close()
        calls = list(server.manager.batcher.calls)

    assert [(c.requests, c.ok) for c in calls] == [(2, True), (2, True)]
    for result, version in zip(results, (oldest, newest, oldest, newest)):
        assert result.distance == pytest.approx(
            _expected_distance(reference, version, images[0], images[1]), abs=1e-5)


def _echo(arrays):
    return {"y": arrays["x"] * 10}


def test_batches_stay_within_the_models_own_limit():
    batcher = Batcher(BatchingParameters(max_batch_size=4, batch_timeout_micros=50_000,
                                         num_batch_threads=1))
    try:
        results = _concurrently(*[
            lambda i=i: batcher.submit(("version", "sig"), _echo, {"x": np.array([i])}, 1,
                                       model_limit=2)
            for i in range(4)])
    finally:
        batcher.stop()

    assert sorted(int(r["y"][0]) for r in results) == [0, 10, 20, 30]
    assert sorted(c.requests for c in batcher.calls) == [2, 2]


def test_a_full_queue_answers_unavailable():
    batcher = Batcher(BatchingParameters(max_batch_size=1, batch_timeout_micros=0,
                                         max_enqueued_batches=1, num_batch_threads=1))
    started, release = threading.Event(), threading.Event()

    def slow(arrays):
        started.set()
        release.wait(30)
        return _echo(arrays)

    def submit(value: int) -> None:
        batcher.submit(("v", "s"), slow, {"x": np.array([value])}, 1)

    threads = [threading.Thread(target=submit, args=(1,))]
    try:
        threads[0].start()
        assert started.wait(30)  # the only batch thread is busy with the first request
        threads.append(threading.Thread(target=submit, args=(2,)))
        threads[1].start()
        while not batcher._queue:  # the second request waits in the queue's only batch
            time.sleep(0.01)
        with pytest.raises(ServingStatusError) as raised:
            submit(3)
    finally:
        release.set()
        for thread in threads:
            thread.join(30)
        batcher.stop()

    assert raised.value.code == grpc.StatusCode.UNAVAILABLE
    assert "max_enqueued_batches" in raised.value.message
    assert [c.requests for c in batcher.calls] == [1, 1]


def test_allowed_batch_sizes_pad_the_call_and_answer_real_rows_only():
    seen = []

    def record(arrays):
        seen.append(len(arrays["x"]))
        return _echo(arrays)

    batcher = Batcher(BatchingParameters(max_batch_size=4, allowed_batch_sizes=(2, 4),
                                         batch_timeout_micros=0, num_batch_threads=1))
    try:
        result = batcher.submit(("v", "s"), record, {"x": np.array([1, 2, 3])}, 3)
    finally:
        batcher.stop()

    assert seen == [4]
    assert result["y"].tolist() == [10, 20, 30]
