"""gRPC conformance of the model server with TF Serving's API and the Siamese model contract.

Runs against the local server, or against a real TF Serving when SIAMESE_TFX_SERVING_ADDRESS is
set (see conftest.py); only public gRPC APIs are used here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import grpc
import numpy as np
import pytest
import serving_fixtures as fx
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2,
                                     model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc)

from siamese_tfx.serving.client import ServingError, SiameseClient
from siamese_tfx.serving.requests import bytes_tensor_proto, tensor_proto_to_ndarray

SIGNATURES = ("serving_default", "compare", "embed")
PAIR_OUTPUTS = {"distance": "float", "similarity": "float", "match": "bool"}


@pytest.fixture(scope="module")
def stubs(target):
    channel = grpc.insecure_channel(target.address)
    yield (
        prediction_service_pb2_grpc.PredictionServiceStub(channel),
        model_service_pb2_grpc.ModelServiceStub(channel),
    )
    channel.close()


def _pairs(images: list[bytes]) -> list[tuple[bytes, bytes]]:
    """Each image with its neighbour, plus two identical pairs."""
    shifted = images[1:] + images[:1]
    return list(zip(images, shifted)) + [(images[0], images[0]), (images[3], images[3])]


def _in_process_compare(model, pairs):
    import tensorflow as tf

    outputs = model.signatures["compare"](
        left_image=tf.constant([a for a, _ in pairs]),
        right_image=tf.constant([b for _, b in pairs]),
    )
    return {name: value.numpy() for name, value in outputs.items()}


def _served_version(client: SiameseClient, images: list[bytes]) -> int:
    client.embed(images[:1])
    assert client.last_version is not None
    return client.last_version


def test_compare_equals_in_process_savedmodel(client, images, reference):
    pairs = _pairs(images)
    results = client.compare_many(pairs)
    version = client.last_version
    expected = _in_process_compare(reference(version), pairs)

    assert len(results) == len(pairs)
    np.testing.assert_allclose([r.distance for r in results], expected["distance"], atol=1e-5)
    np.testing.assert_allclose([r.similarity for r in results], expected["similarity"], atol=1e-5)
    assert [r.match for r in results] == expected["match"].tolist()


def test_compare_outputs_obey_the_contract(client, images):
    results = client.compare_many(_pairs(images))

    for r in results:
        assert r.distance >= 0.0
        assert 0.0 <= r.similarity <= 1.0
        assert (r.similarity >= 0.5) == r.match
    identical = results[-2:]
    assert all(r.match and r.distance < 1e-3 for r in identical)


def test_embed_equals_in_process_savedmodel(client, images, reference):
    import tensorflow as tf

    embeddings = client.embed(images)
    expected = reference(client.last_version).signatures["embed"](image=tf.constant(images))

    assert embeddings.dtype == np.float32
    assert embeddings.shape[0] == len(images) and embeddings.shape[1] >= 2
    np.testing.assert_allclose(embeddings, expected["embedding"].numpy(), atol=1e-5)


@pytest.mark.parametrize("index,kind", [(0, "PNG"), (1, "JPEG"), (2, "BMP"), (3, "GIF")])
def test_every_accepted_image_format_is_decoded(client, images, index, kind):
    embedding = client.embed([images[index]])

    assert embedding.shape[0] == 1 and np.all(np.isfinite(embedding)), kind


def test_serving_default_takes_serialized_examples(client, images):
    pairs = _pairs(images)
    examples = [fx.example_bytes(a, b) for a, b in pairs]

    response = client.predict("serving_default", {"examples": bytes_tensor_proto(examples)})
    expected = client.compare_many(pairs)

    assert set(PAIR_OUTPUTS) <= set(response.outputs)
    distance = tensor_proto_to_ndarray(response.outputs["distance"])
    np.testing.assert_allclose(distance, [r.distance for r in expected], atol=1e-5)
    match = tensor_proto_to_ndarray(response.outputs["match"])
    assert match.tolist() == [r.match for r in expected]


def test_output_filter_returns_only_the_asked_outputs(client, images):
    response = client.predict(
        "compare",
        {
            "left_image": bytes_tensor_proto(images[:2]),
            "right_image": bytes_tensor_proto(images[:2]),
        },
        output_filter=["distance"],
    )

    assert list(response.outputs) == ["distance"]
    np.testing.assert_allclose(tensor_proto_to_ndarray(response.outputs["distance"]), 0, atol=1e-3)


def test_metadata_describes_the_three_signatures(client, images):
    metadata = client.metadata()

    assert metadata.model_name == client.model_name
    assert metadata.version == _served_version(client, images)
    assert set(SIGNATURES) <= set(metadata.signatures)
    compare = metadata.signatures["compare"]
    assert {k: (v.dtype, v.shape) for k, v in compare.inputs.items()} == {
        "left_image": ("string", (None,)),
        "right_image": ("string", (None,)),
    }
    assert {k: (v.dtype, v.shape) for k, v in compare.outputs.items()} == {
        name: (dtype, (None,)) for name, dtype in PAIR_OUTPUTS.items()
    }
    default = metadata.signatures["serving_default"]
    assert {k: (v.dtype, v.shape) for k, v in default.inputs.items()} == {
        "examples": ("string", (None,))
    }
    assert {k: v.dtype for k, v in default.outputs.items()} == PAIR_OUTPUTS
    embed = metadata.signatures["embed"]
    assert {k: (v.dtype, v.shape) for k, v in embed.inputs.items()} == {
        "image": ("string", (None,))
    }
    (spec,) = embed.outputs.values()
    assert list(embed.outputs) == ["embedding"]
    assert spec.dtype == "float" and spec.shape is not None and len(spec.shape) == 2
    assert spec.shape[0] is None
    assert spec.shape[1] == client.embed(images[:1]).shape[1]


def test_metadata_packs_a_signature_def_map(stubs, target):
    prediction, _ = stubs
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = target.model_name

    response = prediction.GetModelMetadata(request, timeout=30)

    signature_map = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signature_map)
    assert set(SIGNATURES) <= set(signature_map.signature_def)
    assert signature_map.signature_def["embed"].inputs["image"].dtype == types_pb2.DT_STRING


def test_status_reports_the_served_version_available(client, images):
    served = _served_version(client, images)

    states = {s.version: s for s in client.status()}

    assert states[served].state == "AVAILABLE"
    assert states[served].error_code == "OK"
    assert served == max(v for v, s in states.items() if s.state == "AVAILABLE")


def test_each_available_version_answers_when_asked_for(target, models, client, images, reference):
    available = [s.version for s in client.status() if s.state == "AVAILABLE"]
    assert available
    if target.is_local:
        assert sorted(available) == sorted(models.versions)[-2:]

    for version in available:
        with SiameseClient(target.address, target.model_name, version=version) as pinned:
            embeddings = pinned.embed(images[:2])
            assert pinned.last_version == version
            assert [s.version for s in pinned.status()] == [version]
        if target.is_local:
            import tensorflow as tf

            expected = reference(version).signatures["embed"](image=tf.constant(images[:2]))
            np.testing.assert_allclose(embeddings, expected["embedding"].numpy(), atol=1e-5)


def _predict(target, signature: str, inputs: dict, **spec) -> tuple[str, object]:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = spec.get("name", target.model_name)
    request.model_spec.signature_name = signature
    if "version" in spec:
        request.model_spec.version.value = spec["version"]
    for name, proto in inputs.items():
        request.inputs[name].CopyFrom(proto)
    return "Predict", request


def _float_tensor(values: list[float]) -> tensor_pb2.TensorProto:
    return tensor_pb2.TensorProto(
        dtype=types_pb2.DT_FLOAT,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=len(values))]
        ),
        float_val=values,
    )


def _string_tensor(values: list[bytes], shape: list[int]) -> tensor_pb2.TensorProto:
    return tensor_pb2.TensorProto(
        dtype=types_pb2.DT_STRING,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=s) for s in shape]
        ),
        string_val=values,
    )


def _case_wrong_input_name(target, img):
    inputs = {"left": bytes_tensor_proto([img]), "right_image": bytes_tensor_proto([img])}
    return _predict(target, "compare", inputs)


def _case_missing_input(target, img):
    return _predict(target, "compare", {"left_image": bytes_tensor_proto([img])})


def _case_wrong_dtype(target, img):
    return _predict(target, "embed", {"image": _float_tensor([1.0, 2.0])})


def _case_wrong_rank(target, img):
    return _predict(target, "embed", {"image": _string_tensor([img] * 4, [2, 2])})


def _case_scalar(target, img):
    return _predict(target, "embed", {"image": _string_tensor([img], [])})


def _case_undecodable_image(target, img):
    return _predict(target, "embed", {"image": bytes_tensor_proto([img, b"not an image at all"])})


def _case_unknown_model(target, img):
    return _predict(target, "embed", {"image": bytes_tensor_proto([img])}, name="no_such_model")


def _case_unknown_version(target, img):
    return _predict(target, "embed", {"image": bytes_tensor_proto([img])}, version=987654321)


def _case_unknown_signature(target, img):
    return _predict(target, "no_such_signature", {"image": bytes_tensor_proto([img])})


def _case_status_unknown_model(target, img):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "no_such_model"
    return "GetModelStatus", request


def _case_status_unknown_version(target, img):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = target.model_name
    request.model_spec.version.value = 987654321
    return "GetModelStatus", request


def _case_metadata_unknown_model(target, img):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "no_such_model"
    return "GetModelMetadata", request


def _case_metadata_without_field(target, img):
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = target.model_name
    return "GetModelMetadata", request


INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND


@dataclass(frozen=True)
class BadRequest:
    name: str
    build: Callable
    code: grpc.StatusCode
    words: tuple[str, ...]  # the local server's message names what was wrong with these
    local_only: bool = False


# TF Serving hands tensors of any shape to the graph, so whether a wrong shape fails there depends
# on the model (the pushed model reshapes its inputs to [-1]); the local server checks shapes
# against the SignatureDef: those cases are local_only.
BAD_REQUESTS = [
    BadRequest("wrong_input_name", _case_wrong_input_name, INVALID, ("left_image",)),
    BadRequest("missing_input", _case_missing_input, INVALID, ("right_image",)),
    BadRequest("wrong_dtype", _case_wrong_dtype, INVALID, ("string", "float")),
    BadRequest(
        "wrong_rank", _case_wrong_rank, INVALID, ("shape", "[2,2]"),
        local_only=True,
    ),
    BadRequest(
        "scalar_instead_of_batch", _case_scalar, INVALID, ("shape", "[]"),
        local_only=True,
    ),
    BadRequest("undecodable_image", _case_undecodable_image, INVALID, ("image",)),
    BadRequest("unknown_model", _case_unknown_model, NOT_FOUND, ("no_such_model",)),
    BadRequest("unknown_version", _case_unknown_version, NOT_FOUND, ("987654321",)),
    BadRequest(
        "unknown_signature",
        _case_unknown_signature,
        grpc.StatusCode.FAILED_PRECONDITION,
        ("no_such_signature",),
    ),
    BadRequest("status_unknown_model", _case_status_unknown_model, NOT_FOUND, ("no_such_model",)),
    BadRequest("status_unknown_version", _case_status_unknown_version, NOT_FOUND, ("987654321",)),
    BadRequest(
        "metadata_unknown_model", _case_metadata_unknown_model, NOT_FOUND, ("no_such_model",)
    ),
    BadRequest(
        "metadata_without_field", _case_metadata_without_field, INVALID, ("metadata_field",)
    ),
]


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=[case.name for case in BAD_REQUESTS])
def test_bad_request_gets_its_status_code_and_server_keeps_serving(
    target, stubs, client, images, case
):
    if case.local_only and not target.is_local:
        pytest.skip("TF Serving does not check input shapes against the SignatureDef")
    prediction, models = stubs
    method_name, request = case.build(target, images[0])
    method = getattr(models if method_name == "GetModelStatus" else prediction, method_name)

    with pytest.raises(grpc.RpcError) as raised:
        method(request, timeout=30)

    assert raised.value.code() == case.code, raised.value.details()
    details = raised.value.details() or ""
    assert details.strip()
    if target.is_local:
        for word in case.words:
            assert word.lower() in details.lower(), details
    assert client.compare(images[0], images[0]).match


def test_expired_deadline_is_reported_and_server_keeps_serving(target, client, images):
    # A deadline already in the past: deterministic, where a microsecond one can be met by a
    # warm model once gRPC rounds it up to its clock granularity.
    with SiameseClient(target.address, target.model_name, timeout=-1.0, retries=0) as hurried:
        with pytest.raises(ServingError) as raised:
            hurried.compare_many(_pairs(images))

    assert raised.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert client.compare(images[1], images[1]).match


def test_health_service_reports_serving(target):
    if not target.is_local:
        pytest.skip("TF Serving does not implement grpc.health.v1")
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(target.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "tensorflow.serving.PredictionService"):
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert response.status == health_pb2.HealthCheckResponse.SERVING, service
