"""A typed client for the Siamese model behind TF Serving's gRPC API (or the local server).

Images travel as their encoded bytes (PNG, JPEG, BMP or GIF): decoding, resizing and scaling
happen inside the served model. Requests are built by `serving.requests`, so the client calls
no TensorFlow op (the generated protos still load the `tensorflow` package).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

import grpc
import numpy as np
from google.protobuf.message import Message
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2, model_pb2,
                                     model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc)

from siamese_tfx.components.contract import errors, signatures
from siamese_tfx.serving import requests
from siamese_tfx.serving.requests import tensor_proto_to_ndarray

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


class ServingError(errors.ExpectedError):
    """A failed call to the model server, with its gRPC status code and the server's message.
    Its exit code: SERVER_UNREACHABLE when no server answered (in time), else NOT_SERVED."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details

    @property
    def exit_code(self) -> errors.ExitCode:  # type: ignore[override]
        unreachable = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
        return (errors.ExitCode.SERVER_UNREACHABLE if self.code in unreachable
                else errors.ExitCode.NOT_SERVED)


@dataclass(frozen=True)
class Comparison:
    """The model's verdict on one image pair."""

    distance: float
    similarity: float
    match: bool


@dataclass(frozen=True)
class Identification:
    """A gallery model's answer for one query image: the nearest enrolled identities, nearest
    first, and whether the nearest is within the model's match threshold."""

    labels: tuple[str, ...]
    distances: tuple[float, ...]
    similarities: tuple[float, ...]
    known: bool

    @property
    def label(self) -> str | None:
        """The nearest identity when it is within the threshold, else None ("unknown")."""
        return self.labels[0] if self.known and self.labels else None


@dataclass(frozen=True)
class TensorSpec:
    """A signature input's or output's dtype (e.g. "string") and shape (None: any size)."""

    dtype: str
    shape: tuple[int | None, ...] | None


@dataclass(frozen=True)
class SignatureSpec:
    """One serving signature's inputs and outputs."""

    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]
    method_name: str


@dataclass(frozen=True)
class ModelMetadata:
    """What GetModelMetadata says about the served version."""

    model_name: str
    version: int
    signatures: dict[str, SignatureSpec]


@dataclass(frozen=True)
class VersionState:
    """One version's state as GetModelStatus reports it (state e.g. "AVAILABLE")."""

    version: int
    state: str
    error_code: str
    error_message: str


@dataclass(frozen=True)
class ClientTls:
    """TLS settings for the channel.

    Attributes:
        root_certificates_file: PEM of the CA that signed the server's certificate (None: the
            system's roots).
        cert_chain_file: PEM client certificate, for servers that require mutual TLS.
        private_key_file: PEM key of that client certificate.
        server_name_override: Name to check the server certificate against instead of the host.
    """

    root_certificates_file: str | None = None
    cert_chain_file: str | None = None
    private_key_file: str | None = None
    server_name_override: str | None = None


def _read(path: str | None) -> bytes | None:
    if path is None:
        return None
    with open(path, "rb") as f:
        return f.read()


def _tensor_spec(info: meta_graph_pb2.TensorInfo) -> TensorSpec:
    dtype = types_pb2.DataType.Name(info.dtype).removeprefix("DT_").lower()
    if info.tensor_shape.unknown_rank:
        return TensorSpec(dtype, None)
    return TensorSpec(dtype, tuple(d.size if d.size >= 0 else None for d in info.tensor_shape.dim))


class SiameseClient:
    """Compares, embeds and identifies images with a served Siamese model over gRPC.

    Args:
        address: "host:port" of TF Serving or the local server.
        model_name: The served model's name.
        version: Ask for this version (None: the newest served one).
        timeout: Deadline of each call, in seconds.
        retries: How often a call that failed with UNAVAILABLE is retried (no other code is).
        backoff: Wait before the first retry, in seconds; doubled for every further one.
        max_batch: Most pairs or images sent in one Predict request.
        max_message_bytes: Largest message sent or received.
        tls: TLS settings; None for a plaintext channel.

    `last_version` holds the model version that answered the latest Predict call. A client may
    be shared between threads (gRPC channels are thread-safe); `last_version` is then whichever
    call finished last.
    """

    def __init__(
        self,
        address: str,
        model_name: str = signatures.DEFAULT_MODEL_NAME,
        *,
        version: int | None = None,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.2,
        max_batch: int = 32,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        tls: ClientTls | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.address = address
        self.model_name = model_name
        self.version = version
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_batch = max_batch
        self.last_version: int | None = None
        options = [
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
        ]
        if tls is None:
            self._channel = grpc.insecure_channel(address, options=options)
        else:
            if tls.server_name_override:
                options.append(("grpc.ssl_target_name_override", tls.server_name_override))
            credentials = grpc.ssl_channel_credentials(
                root_certificates=_read(tls.root_certificates_file),
                private_key=_read(tls.private_key_file),
                certificate_chain=_read(tls.cert_chain_file),
            )
            self._channel = grpc.secure_channel(address, credentials, options=options)
        self._predictions = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)

    def __enter__(self) -> "SiameseClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Closes the channel."""
        self._channel.close()

    def _call(self, method: Callable[..., Message], request: Message) -> Any:
        for attempt in range(self.retries + 1):
            try:
                return method(request, timeout=self.timeout)
            except grpc.RpcError as e:
                code = e.code()
                if code == grpc.StatusCode.UNAVAILABLE and attempt < self.retries:
                    time.sleep(self.backoff * 2**attempt)
                    continue
                raise ServingError(code, e.details() or "") from e
        raise AssertionError("unreachable")

    def _model_spec(self, spec: model_pb2.ModelSpec) -> None:
        spec.name = self.model_name
        if self.version is not None:
            spec.version.value = self.version

    def predict(
        self,
        signature_name: str,
        inputs: Mapping[str, tensor_pb2.TensorProto],
        output_filter: Sequence[str] = (),
    ) -> predict_pb2.PredictResponse:
        """One raw Predict call (no batching), for signatures the typed methods do not cover."""
        return self._predict(requests.predict_request(
            self.model_name, signature_name, inputs, self.version, output_filter))

    def _predict(self, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
        response = self._call(self._predictions.Predict, request)
        if response.model_spec.HasField("version"):
            self.last_version = response.model_spec.version.value
        return response

    def _outputs(
        self, response: predict_pb2.PredictResponse, names: Sequence[str]
    ) -> list[np.ndarray]:
        missing = [name for name in names if name not in response.outputs]
        if missing:
            raise ServingError(
                grpc.StatusCode.INTERNAL, f"response lacks output(s) {missing}"
            )
        return [tensor_proto_to_ndarray(response.outputs[name]) for name in names]

    def compare(self, left: bytes, right: bytes) -> Comparison:
        """Compares two encoded images."""
        return self.compare_many([(left, right)])[0]

    def compare_many(self, pairs: Iterable[tuple[bytes, bytes]]) -> list[Comparison]:
        """Compares image pairs, `max_batch` pairs per Predict request."""
        pairs = list(pairs)
        results: list[Comparison] = []
        for start in range(0, len(pairs), self.max_batch):
            chunk = pairs[start : start + self.max_batch]
            response = self._predict(requests.compare_request(
                self.model_name, [left for left, _ in chunk], [right for _, right in chunk],
                self.version))
            distance, similarity, match = self._outputs(response, signatures.PAIR_OUTPUTS)
            results.extend(
                Comparison(float(d), float(s), bool(m))
                for d, s, m in zip(distance.reshape(-1), similarity.reshape(-1), match.reshape(-1))
            )
        if len(results) != len(pairs):
            raise ServingError(
                grpc.StatusCode.INTERNAL,
                f"server returned {len(results)} comparisons for {len(pairs)} pairs",
            )
        return results

    def embed(self, images: Sequence[bytes]) -> np.ndarray:
        """Embeds encoded images: a float32 array [len(images), D]."""
        parts = []
        for start in range(0, len(images), self.max_batch):
            chunk = list(images[start : start + self.max_batch])
            response = self._predict(requests.embed_request(self.model_name, chunk,
                                                            self.version))
            (embedding,) = self._outputs(response, (signatures.EMBEDDING,))
            if embedding.ndim != 2 or embedding.shape[0] != len(chunk):
                raise ServingError(
                    grpc.StatusCode.INTERNAL,
                    f"embedding of shape {embedding.shape} for {len(chunk)} images",
                )
            parts.append(embedding.astype(np.float32, copy=False))
        if not parts:
            return np.zeros((0, 0), dtype=np.float32)
        return np.concatenate(parts)

    def identify(self, images: Sequence[bytes], top_k: int = 5) -> list[Identification]:
        """Identifies encoded images against a gallery model's enrolled identities (its
        `identify` signature, `siamese-tfx gallery build`): for each image, at most `top_k`
        identities (the gallery model returns the top k it was built with), `max_batch` images
        per Predict request."""
        if top_k < 1:
            raise ValueError("top_k must be >= 1")
        results: list[Identification] = []
        for start in range(0, len(images), self.max_batch):
            chunk = list(images[start : start + self.max_batch])
            response = self._predict(requests.identify_request(self.model_name, chunk,
                                                               self.version))
            labels, distances, similarities, known = self._outputs(
                response, signatures.IDENTIFY_OUTPUTS)
            if labels.ndim != 2 or labels.shape[0] != len(chunk) or known.shape != (len(chunk),):
                raise ServingError(
                    grpc.StatusCode.INTERNAL,
                    f"identify returned labels of shape {labels.shape} and known of shape "
                    f"{known.shape} for {len(chunk)} images",
                )
            for row in range(len(chunk)):
                results.append(Identification(
                    labels=tuple(v.decode() if isinstance(v, bytes) else str(v)
                                 for v in labels[row, :top_k]),
                    distances=tuple(float(v) for v in distances[row, :top_k]),
                    similarities=tuple(float(v) for v in similarities[row, :top_k]),
                    known=bool(known[row]),
                ))
        return results

    def status(self) -> list[VersionState]:
        """GetModelStatus: every version the server knows of (or the pinned one), newest first."""
        request = get_model_status_pb2.GetModelStatusRequest()
        self._model_spec(request.model_spec)
        response = self._call(self._models.GetModelStatus, request)
        states = get_model_status_pb2.ModelVersionStatus.State
        return [
            VersionState(
                version=s.version,
                state=states.Name(s.state),
                error_code=_CODE_NAMES.get(s.status.error_code, str(s.status.error_code)),
                error_message=s.status.error_message,
            )
            for s in response.model_version_status
        ]

    def metadata(self) -> ModelMetadata:
        """GetModelMetadata: the served version and its signatures."""
        request = get_model_metadata_pb2.GetModelMetadataRequest()
        self._model_spec(request.model_spec)
        request.metadata_field.append("signature_def")
        response = self._call(self._predictions.GetModelMetadata, request)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        if not response.metadata["signature_def"].Unpack(signature_map):
            raise ServingError(grpc.StatusCode.INTERNAL, "metadata lacks a SignatureDefMap")
        by_name = {
            name: SignatureSpec(
                inputs={k: _tensor_spec(v) for k, v in sig.inputs.items()},
                outputs={k: _tensor_spec(v) for k, v in sig.outputs.items()},
                method_name=sig.method_name,
            )
            for name, sig in signature_map.signature_def.items()
        }
        return ModelMetadata(
            model_name=response.model_spec.name,
            version=response.model_spec.version.value,
            signatures=by_name,
        )
