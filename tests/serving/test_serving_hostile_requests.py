"""Hostile requests cannot hurt the served model or the server (issue 15, items 1-3 and 5).

The model is the Trainer's real export (`export.export_model`: the Transform graph, the checks
in its signatures, the default ServingLimitsConfig), served by the real server in its own process
(`python -m siamese_tfx.serving.cli serve`) on 127.0.0.1, so its memory and CPU time are its
own; the same SavedModel is also run in-process, as tensorflow/serving runs it, to show that
the graph itself refuses what it must.
"""

from __future__ import annotations

import io
import os
import struct
import time
import zlib

import grpc
import numpy as np
import pytest
import serving_fixtures as fx
from PIL import Image
from serving_fixtures import needs_local_server
from tensorflow_serving.apis import prediction_service_pb2_grpc

from siamese_tfx.components.contract import signatures
from siamese_tfx.serving.requests import (bytes_tensor_proto, compare_request, embed_request,
                                          examples_request, predict_request,
                                          tensor_proto_to_ndarray)

pytestmark = pytest.mark.slow

NAME = "siamese"
INVALID = grpc.StatusCode.INVALID_ARGUMENT
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def bomb_png(width: int, height: int) -> bytes:
    """A valid greyscale PNG of width x height zeros: about 1/1000 of its pixels in bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    compressor = zlib.compressobj(9)
    row = bytes(width + 1)  # the filter byte, then the row
    step = max(1, (1 << 24) // len(row))
    data = b"".join(compressor.compress(row * min(step, height - start))
                    for start in range(0, height, step)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data)
            + chunk(b"IEND", b""))


def _gradient_pngs(count: int, size: int) -> list[bytes]:
    """Different large greyscale images that compress to a few KB each."""
    ramp = np.arange(size)
    images = []
    for i in range(count):
        pixels = (np.add.outer(ramp * (1 + i % 7), ramp * (1 + i % 5)) + i) % 256
        buffer = io.BytesIO()
        Image.fromarray(pixels.astype(np.uint8)).save(buffer, "PNG")
        images.append(buffer.getvalue())
    return images


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def _cpu_when_idle(pid: int, quiet_s: float = 0.5, timeout_s: float = 120.0) -> float:
    """The process's CPU seconds once it spends under 5% of a core for `quiet_s`."""
    deadline = time.monotonic() + timeout_s
    before = _cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(quiet_s)
        now = _cpu_seconds(pid)
        if now - before < 0.05 * quiet_s:
            return now
        before = now
    pytest.fail(f"the server was still busy after {timeout_s:.0f} s")


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> str:
    """A model base holding the real export as <base>/siamese/1."""
    needs_local_server()
    base = tmp_path_factory.mktemp("exported_base")
    fx.build_exported_model(fx.version_dir(str(base), NAME, 1), NAME,
                            str(tmp_path_factory.mktemp("exported_work")))
    return str(base)


@pytest.fixture(scope="module")
def server(exported, tmp_path_factory):
    """The model server in its own process on 127.0.0.1, serving the real export."""
    from siamese_tfx.serving.infra_validation import _ServerProcess

    process = _ServerProcess(exported, NAME, str(tmp_path_factory.mktemp("server") / "log"))
    try:
        process.address = process.wait_for_address(180)
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def stub(server):
    with grpc.insecure_channel(server.address, options=[
            ("grpc.max_send_message_length", 64 << 20)]) as channel:
        yield prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="module")
def loaded(exported):
    import tensorflow as tf

    return tf.saved_model.load(fx.version_dir(exported, NAME, 1))


@pytest.fixture(scope="module")
def small():
    return fx.encoded_images(4)


def _refused(stub, request, timeout: float = 30.0) -> str:
    with pytest.raises(grpc.RpcError) as raised:
        stub.Predict(request, timeout=timeout)
    assert raised.value.code() == INVALID, raised.value.details()
    return raised.value.details()


def _still_serves(stub, small) -> None:
    response = stub.Predict(compare_request(NAME, small[:1], small[:1]), timeout=30)
    assert tensor_proto_to_ndarray(response.outputs[signatures.MATCH]).tolist() == [True]


def test_decompression_bomb_is_refused_from_its_header_without_memory(server, stub, small):
    bomb = bomb_png(20000, 20000)
    assert len(bomb) < 400_000
    rss_before = _rss_mib(server.process.pid)

    details = _refused(stub, compare_request(NAME, [bomb], small[:1]), timeout=5.0)

    assert "left_image[0]: PNG of 20000x20000 pixels" in details
    assert f"{signatures.MAX_IMAGE_PIXELS_ATTR}=16777216" in details
    assert _rss_mib(server.process.pid) - rss_before < 100
    details = _refused(stub, embed_request(NAME, small[:2] + [bomb_png(10000, 10000)]), 5.0)
    assert "image[2]: PNG of 10000x10000 pixels" in details
    assert _rss_mib(server.process.pid) - rss_before < 100
    _still_serves(stub, small)


def test_image_above_the_byte_limit_is_refused(stub, small):
    padded = small[0] + bytes(16 * 1024 * 1024)  # a PNG's decoder ignores trailing bytes

    details = _refused(stub, compare_request(NAME, small[:1], [padded]))

    assert f"right_image[0]: {len(padded)} bytes" in details
    assert signatures.MAX_IMAGE_BYTES_ATTR in details
    _still_serves(stub, small)


def test_what_the_model_cannot_measure_is_refused_before_decoding(stub, small):
    jpeg = small[1]
    frame = jpeg.index(b"\xff\xc0")
    no_frame = jpeg[:frame] + b"\xff\xda\x00\x02" + bytes(16)  # image data before any frame

    assert "not a PNG, JPEG, GIF or BMP image" in _refused(
        stub, embed_request(NAME, [small[0], b"not an image at all"]))
    assert "image[0]: a JPEG whose image size cannot be read" in _refused(
        stub, embed_request(NAME, [no_frame]))


def test_tensor_declaring_more_values_than_it_holds_is_refused_before_conversion(
        server, stub, small):
    proto = bytes_tensor_proto(small[:1])
    proto.tensor_shape.dim[0].size = 20_000
    request = predict_request(NAME, signatures.EMBED, {signatures.EMBED_INPUT: proto})
    assert request.ByteSize() < 1500
    cpu_before = _cpu_seconds(server.process.pid)

    details = _refused(stub, request)

    assert "holds 1 value(s) but its shape [20000] declares 20000" in details
    # Refused from the message alone: nowhere near the seconds 20,000 embeddings take.
    assert _cpu_when_idle(server.process.pid) - cpu_before < 1.0
    _still_serves(stub, small)


def test_batch_above_the_server_limit_is_refused(stub, small):
    details = _refused(stub, embed_request(NAME, small[:1] * 1025))

    assert "holds a batch of 1025, above this server's max_batch_size of 1024" in details


def test_compare_with_unequal_batches_is_refused(stub, small):
    details = _refused(stub, compare_request(NAME, small[:2], small[2:3]))

    assert "left_image holds 2 images but right_image holds 1" in details
    _still_serves(stub, small)


def test_empty_batches_answer_empty_outputs(stub):
    pair = stub.Predict(compare_request(NAME, [], []), timeout=30)
    examples = stub.Predict(examples_request(NAME, [], []), timeout=30)
    embedded = stub.Predict(embed_request(NAME, []), timeout=30)

    for response in (pair, examples):
        assert {name: tensor_proto_to_ndarray(response.outputs[name]).shape
                for name in signatures.PAIR_OUTPUTS} == {name: (0,)
                                                          for name in signatures.PAIR_OUTPUTS}
    embedding = tensor_proto_to_ndarray(embedded.outputs[signatures.EMBEDDING])
    assert embedding.shape == (0, fx.EMBEDDING_DIM)


def test_a_request_the_client_gave_up_on_stops_its_work(server, stub, small):
    pid = server.process.pid
    images = _gradient_pngs(641, 320)
    request = compare_request(NAME, images[:-1], images[1:])
    _cpu_when_idle(pid)
    started, cpu_start = time.monotonic(), _cpu_seconds(pid)
    stub.Predict(request, timeout=300)
    whole_seconds = time.monotonic() - started
    whole_cpu = _cpu_when_idle(pid) - cpu_start

    with pytest.raises(grpc.RpcError) as raised:
        stub.Predict(request, timeout=whole_seconds / 4)
    gave_up = _cpu_seconds(pid)
    started = time.monotonic()
    _still_serves(stub, small)
    next_seconds = time.monotonic() - started
    after = _cpu_when_idle(pid) - gave_up

    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # 640 pairs run as 20 chunks of 32: once the client is gone at most about one more runs.
    assert after < 0.3 * whole_cpu, (after, whole_cpu)
    assert next_seconds < 0.5 * whole_seconds, (next_seconds, whole_seconds)


def test_the_exported_graph_itself_refuses_bombs_and_unequal_batches(loaded, small):
    """As tensorflow/serving runs the SavedModel: no server-side check in between."""
    import tensorflow as tf

    compare = loaded.signatures[signatures.COMPARE]
    with pytest.raises(tf.errors.InvalidArgumentError, match="20000x20000 pixels"):
        compare(left_image=tf.constant([bomb_png(20000, 20000)]),
                right_image=tf.constant(small[:1]))
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="left_image holds 2 images but right_image holds 1"):
        compare(left_image=tf.constant(small[:2]), right_image=tf.constant(small[2:3]))
    # A TensorProto TF Serving expanded to 20,000 copies of its one value.
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=f"image holds 20000 images, above the model limit "
                             f"{signatures.MAX_BATCH_SIZE_ATTR}=1024"):
        loaded.signatures[signatures.EMBED](image=tf.constant(small[:1] * 20000))
    examples = [fx.example_bytes(small[0], small[1]), fx.example_bytes(small[0],
                                                                       bomb_png(5000, 5000))]
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"examples\[1\].right_image: PNG of 5000x5000"):
        loaded.signatures[signatures.SERVING_DEFAULT](examples=tf.constant(examples))


def test_the_exported_model_stores_its_limits_beside_its_threshold(loaded):
    from siamese_tfx.components.contract.config import ServingLimitsConfig

    defaults = ServingLimitsConfig()
    assert {name: int(getattr(loaded, name).numpy()) for name in signatures.LIMIT_ATTRS} == {
        signatures.MAX_IMAGE_PIXELS_ATTR: defaults.serving_max_image_pixels,
        signatures.MAX_IMAGE_BYTES_ATTR: defaults.serving_max_image_bytes,
        signatures.MAX_BATCH_SIZE_ATTR: defaults.serving_max_batch_size,
    }
    assert float(getattr(loaded, signatures.THRESHOLD_ATTR).numpy()) == 0.5
