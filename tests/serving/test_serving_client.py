"""The typed client: TensorProto conversion, batching, retries, errors, TLS and message limits."""

from __future__ import annotations

import subprocess
from concurrent import futures

import grpc
import numpy as np
import pytest
from serving_fixtures import needs_local_server
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from siamese_tfx.serving.client import ClientTls, Comparison, ServingError, SiameseClient
from siamese_tfx.serving.requests import bytes_tensor_proto, tensor_proto_to_ndarray


@pytest.mark.parametrize(
    "array",
    [
        np.array([0.5, -1.25, 3.0], dtype=np.float32),
        np.arange(12, dtype=np.float32).reshape(3, 4),
        np.array([True, False, True]),
        np.array([[1, 2], [3, 4]], dtype=np.int64),
        np.array([b"a", b"\x00\xffbytes"], dtype=object),
    ],
    ids=["float", "float_2d", "bool", "int64", "string"],
)
def test_tensor_proto_round_trip_matches_tensorflow(array):
    import tensorflow as tf

    proto = tf.make_tensor_proto(array)
    assert tensor_proto_to_ndarray(proto).tolist() == array.tolist()
    assert tensor_proto_to_ndarray(proto).shape == array.shape


def test_tensor_proto_with_one_value_fills_its_shape():
    import tensorflow as tf

    proto = tf.make_tensor_proto(np.float32(2.5), shape=[2, 3])
    np.testing.assert_array_equal(tensor_proto_to_ndarray(proto), np.full((2, 3), 2.5))


def test_bytes_tensor_proto_is_what_tensorflow_reads():
    import tensorflow as tf

    values = [b"\x89PNG...", b"", b"jpeg"]
    assert tf.make_ndarray(bytes_tensor_proto(values)).tolist() == values


class _ScriptedPredictions(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Fails the first calls with the scripted codes, then answers `compare` with batch sizes."""

    def __init__(self, failures: list[grpc.StatusCode]) -> None:
        self.failures = list(failures)
        self.batch_sizes: list[int] = []

    def Predict(self, request, context):
        if self.failures:
            context.abort(self.failures.pop(0), "scripted failure")
        n = request.inputs["left_image"].tensor_shape.dim[0].size
        self.batch_sizes.append(n)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.version.value = 5
        response.outputs["distance"].CopyFrom(_proto(types_pb2.DT_FLOAT, np.arange(n)))
        response.outputs["similarity"].CopyFrom(_proto(types_pb2.DT_FLOAT, np.full(n, 0.75)))
        match = _proto(types_pb2.DT_BOOL, np.ones(n))
        response.outputs["match"].CopyFrom(match)
        return response


def _proto(dtype: int, values: np.ndarray) -> tensor_pb2.TensorProto:
    """Floats as `tensor_content`, bools as `bool_val`: TF Serving uses either form."""
    proto = tensor_pb2.TensorProto(dtype=dtype)
    proto.tensor_shape.dim.add().size = len(values)
    if dtype == types_pb2.DT_BOOL:
        proto.bool_val.extend(bool(v) for v in values)
    else:
        proto.tensor_content = values.astype(np.float32).tobytes()
    return proto


@pytest.fixture
def scripted():
    servicer = _ScriptedPredictions([])
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, f"127.0.0.1:{port}"
    server.stop(0)


def test_compare_many_sends_chunks_of_max_batch(scripted):
    servicer, address = scripted
    with SiameseClient(address, max_batch=2) as client:
        results = client.compare_many([(b"a", b"b")] * 5)

    assert servicer.batch_sizes == [2, 2, 1]
    assert results[:2] == [Comparison(0.0, 0.75, True), Comparison(1.0, 0.75, True)]
    assert len(results) == 5 and client.last_version == 5


def test_unavailable_is_retried_with_backoff(scripted):
    servicer, address = scripted
    servicer.failures = [grpc.StatusCode.UNAVAILABLE] * 2
    with SiameseClient(address, retries=2, backoff=0.01) as client:
        assert client.compare(b"a", b"b").similarity == 0.75

    assert servicer.failures == [] and servicer.batch_sizes == [1]


def test_retries_give_up_with_a_serving_error(scripted):
    servicer, address = scripted
    servicer.failures = [grpc.StatusCode.UNAVAILABLE] * 3
    with SiameseClient(address, retries=1, backoff=0.01) as client:
        with pytest.raises(ServingError) as raised:
            client.compare(b"a", b"b")

    assert raised.value.code == grpc.StatusCode.UNAVAILABLE
    assert "scripted failure" in raised.value.details
    assert len(servicer.failures) == 1


def test_other_codes_are_not_retried(scripted):
    servicer, address = scripted
    servicer.failures = [grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNAVAILABLE]
    with SiameseClient(address, retries=3, backoff=0.01) as client:
        with pytest.raises(ServingError) as raised:
            client.compare(b"a", b"b")

    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert servicer.failures == [grpc.StatusCode.UNAVAILABLE]


def test_no_server_is_unavailable():
    with SiameseClient("127.0.0.1:1", retries=1, backoff=0.01, timeout=5) as client:
        with pytest.raises(ServingError) as raised:
            client.status()

    assert raised.value.code == grpc.StatusCode.UNAVAILABLE


def test_client_compare_and_embed_agree(client, images):
    embeddings = client.embed(images[:2])
    comparison = client.compare(images[0], images[1])

    assert embeddings.shape[0] == 2
    np.testing.assert_allclose(
        comparison.distance, np.linalg.norm(embeddings[0] - embeddings[1]), rtol=1e-4, atol=1e-5
    )


def test_message_size_limit_is_enforced(models, images):
    needs_local_server()
    from siamese_tfx.serving.config import ServerConfig
    from siamese_tfx.serving.server import start_server

    config = ServerConfig(
        model_base=models.model_base, model_name=models.model_name, port=0, max_message_bytes=64_000
    )
    with start_server(config) as server:
        with SiameseClient(server.address, models.model_name, timeout=30) as client:
            with pytest.raises(ServingError) as raised:
                client.embed([images[0] + b"\x00" * 100_000])
            assert raised.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert client.embed(images[:1]).shape[0] == 1


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate."""
    needs_local_server()
    folder = tmp_path_factory.mktemp("tls")

    def path(name: str) -> str:
        return str(folder / name)

    new_key = ["-newkey", "rsa:2048", "-nodes"]
    _openssl("req", "-x509", *new_key, "-days", "1", "-subj", "/CN=test-ca",
             "-keyout", path("ca.key"), "-out", path("ca.pem"))
    for name, extension in (
        ("server", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
        ("client", "extendedKeyUsage=clientAuth"),
    ):
        _openssl("req", *new_key, "-subj", f"/CN={name}",
                 "-keyout", path(f"{name}.key"), "-out", path(f"{name}.csr"))
        with open(path(f"{name}.ext"), "w") as f:
            f.write(extension + "\n")
        _openssl("x509", "-req", "-in", path(f"{name}.csr"), "-CA", path("ca.pem"),
                 "-CAkey", path("ca.key"), "-CAcreateserial", "-days", "1",
                 "-extfile", path(f"{name}.ext"), "-out", path(f"{name}.pem"))
    return path


def test_mutual_tls(models, images, certificates):
    from siamese_tfx.serving.config import ServerConfig, TlsConfig
    from siamese_tfx.serving.server import start_server

    tls = TlsConfig(certificates("server.pem"), certificates("server.key"), certificates("ca.pem"))
    config = ServerConfig(
        model_base=models.model_base, model_name=models.model_name, port=0, tls=tls
    )
    with start_server(config) as server:
        trusted = ClientTls(
            root_certificates_file=certificates("ca.pem"),
            cert_chain_file=certificates("client.pem"),
            private_key_file=certificates("client.key"),
        )
        with SiameseClient(server.address, models.model_name, tls=trusted) as client:
            assert client.compare(images[0], images[0]).match

        anonymous = ClientTls(root_certificates_file=certificates("ca.pem"))
        for tls_settings in (anonymous, None):
            with SiameseClient(
                server.address, models.model_name, tls=tls_settings, retries=0, timeout=10
            ) as client:
                with pytest.raises(ServingError) as raised:
                    client.compare(images[0], images[0])
                assert raised.value.code == grpc.StatusCode.UNAVAILABLE
