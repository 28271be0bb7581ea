"""A gRPC server speaking TF Serving's own API, for local use and tests.

Production serves the pushed SavedModels with the real `tensorflow/serving` (see
`serving/deploy/`). This server implements the same services from `tensorflow_serving.apis`
(PredictionService.Predict and GetModelMetadata, ModelService.GetModelStatus) plus the standard
gRPC health service, over the same `<model_base>/<model_name>/<version>/` layout, so a client
cannot tell the two apart.

    handle = start_server(ServerConfig(model_base="/srv/models", model_name="siamese", port=0))
    print(handle.address)
    handle.stop()
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import threading
from concurrent import futures
from typing import Callable, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2, model_pb2,
                                     model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc)

from siamese_tfx.components.contract import signatures
from siamese_tfx.serving.batching import read_batching_parameters
from siamese_tfx.serving.config import ServerConfig, TlsConfig
from siamese_tfx.serving.errors import ServingStatusError
from siamese_tfx.serving.model_manager import ModelManager, resolve_model_name

logger = logging.getLogger(__name__)

T = TypeVar("T")

HEALTH_SERVICES = ("", "tensorflow.serving.PredictionService", "tensorflow.serving.ModelService")


def _interruption(context: grpc.ServicerContext) -> ServingStatusError | None:
    """Why the request's work should stop now (its deadline passed, or the client cancelled
    it), or None while its client still waits for the answer."""
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        return ServingStatusError(
            grpc.StatusCode.DEADLINE_EXCEEDED, "the request's deadline passed before the server "
            "could run (the rest of) it")
    if not context.is_active():
        return ServingStatusError(
            grpc.StatusCode.CANCELLED, "the client cancelled the request before the server "
            "could run (the rest of) it")
    return None


def _answer(context: grpc.ServicerContext, handler: Callable[[], T]) -> T:
    """Runs `handler` unless the request's deadline passed or its client cancelled it while it
    waited for a worker, turning its ServingStatusError (or a crash) into the call's status."""
    stop = _interruption(context)
    if stop is not None:
        context.abort(stop.code, stop.message)
    try:
        return handler()
    except ServingStatusError as e:
        error = e
    except Exception as e:  # a crash answers INTERNAL; the server keeps serving.
        logger.exception("Request failed")
        error = ServingStatusError(grpc.StatusCode.INTERNAL, f"{type(e).__name__}: {e}")
    context.abort(error.code, error.message)
    raise AssertionError("context.abort returned")


def _version_of(spec: model_pb2.ModelSpec) -> int | None:
    if spec.WhichOneof("version_choice") == "version_label":
        raise ServingStatusError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"version labels are not supported by this server (got {spec.version_label!r}); "
            "ask for a version number or none",
        )
    return spec.version.value if spec.HasField("version") else None


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """TF Serving's PredictionService: Predict and GetModelMetadata (the others: UNIMPLEMENTED)."""

    def __init__(self, manager: ModelManager) -> None:
        self._manager = manager

    def _check_model(self, spec: model_pb2.ModelSpec) -> None:
        if spec.name != self._manager.model_name:
            raise ServingStatusError(
                grpc.StatusCode.NOT_FOUND,
                f"Servable not found for request: model {spec.name!r} is not served here "
                f"(this server serves {self._manager.model_name!r})",
            )

    # gRPC calls this for tensorflow.serving.PredictionService/Predict.
    def Predict(
        self, request: predict_pb2.PredictRequest, context: grpc.ServicerContext
    ) -> predict_pb2.PredictResponse:
        """Runs the requested signature of the requested (or newest) version."""
        def handle() -> predict_pb2.PredictResponse:
            self._check_model(request.model_spec)
            loaded = self._manager.get(_version_of(request.model_spec))
            signature_name = request.model_spec.signature_name or signatures.SERVING_DEFAULT
            outputs = loaded.predict(signature_name, request.inputs, request.output_filter,
                                     interrupted=lambda: _interruption(context))
            response = predict_pb2.PredictResponse()
            response.model_spec.name = loaded.model_name
            response.model_spec.version.value = loaded.version
            response.model_spec.signature_name = signature_name
            for name, proto in outputs.items():
                response.outputs[name].CopyFrom(proto)
            return response

        return _answer(context, handle)

    # gRPC calls this for tensorflow.serving.PredictionService/GetModelMetadata.
    def GetModelMetadata(
        self, request: get_model_metadata_pb2.GetModelMetadataRequest, context: grpc.ServicerContext
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        """The version's SignatureDefMap, packed in metadata["signature_def"] as TF Serving does."""
        def handle() -> get_model_metadata_pb2.GetModelMetadataResponse:
            self._check_model(request.model_spec)
            fields = list(request.metadata_field)
            if not fields:
                raise ServingStatusError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "GetModelMetadataRequest must specify at least one metadata_field",
                )
            unsupported = sorted(set(fields) - {"signature_def"})
            if unsupported:
                raise ServingStatusError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"Metadata field(s) {unsupported} not supported; supported: signature_def",
                )
            loaded = self._manager.get(_version_of(request.model_spec))
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            response.model_spec.name = loaded.model_name
            response.model_spec.version.value = loaded.version
            response.metadata["signature_def"].Pack(loaded.signature_def_map())
            return response

        return _answer(context, handle)


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    """TF Serving's ModelService: GetModelStatus (HandleReloadConfigRequest: UNIMPLEMENTED)."""

    def __init__(self, manager: ModelManager) -> None:
        self._manager = manager

    # gRPC calls this for tensorflow.serving.ModelService/GetModelStatus.
    def GetModelStatus(
        self, request: get_model_status_pb2.GetModelStatusRequest, context: grpc.ServicerContext
    ) -> get_model_status_pb2.GetModelStatusResponse:
        """Every known version's state (or the requested version's), with load errors."""
        def handle() -> get_model_status_pb2.GetModelStatusResponse:
            if request.model_spec.name != self._manager.model_name:
                raise ServingStatusError(
                    grpc.StatusCode.NOT_FOUND,
                    f"Could not find any versions of model {request.model_spec.name!r}",
                )
            statuses = self._manager.statuses(_version_of(request.model_spec))
            return get_model_status_pb2.GetModelStatusResponse(
                model_version_status=[s.to_proto() for s in statuses]
            )

        return _answer(context, handle)


class ServingServer:
    """A running server: its bound `port` and `address`, its `manager`, and `stop()`."""

    def __init__(
        self,
        server: grpc.Server,
        manager: ModelManager,
        health_servicer: health.HealthServicer,
        host: str,
        port: int,
        grace_s: float,
    ) -> None:
        self._server = server
        self._health = health_servicer
        self._grace_s = grace_s
        self._stopped = threading.Event()
        self.manager = manager
        self.host = host
        self.port = port

    @property
    def address(self) -> str:
        """"host:port" for clients."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def stop(self, grace_s: float | None = None) -> None:
        """Stops taking requests, lets those in flight finish (up to the grace), stops polling."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self._health.enter_graceful_shutdown()
        self._server.stop(self._grace_s if grace_s is None else grace_s).wait()
        self.manager.stop()
        logger.info("Server on %s stopped", self.address)

    def wait(self, timeout: float | None = None) -> bool:
        """Blocks until the server stopped (or `timeout` passed); True if it stopped."""
        timed_out = self._server.wait_for_termination(timeout)
        return not timed_out

    def __enter__(self) -> "ServingServer":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _bind(server: grpc.Server, bind: str, tls: TlsConfig | None) -> int:
    if tls is None:
        return server.add_insecure_port(bind)
    credentials = grpc.ssl_server_credentials(
        [(_read(tls.private_key_file), _read(tls.cert_chain_file))],
        root_certificates=_read(tls.client_ca_file) if tls.client_ca_file else None,
        require_client_auth=tls.client_ca_file is not None,
    )
    return server.add_secure_port(bind, credentials)


def start_server(config: ServerConfig) -> ServingServer:
    """Loads the newest version(s), then starts serving in background threads.

    The server starts even when no version exists yet: it answers NOT_FOUND (and health
    NOT_SERVING) until Pusher writes one and the next poll loads it.

    With no model name, serves the one model under the model base.

    Raises:
        ValueError: the batching parameters file cannot be read or parsed; or no model name
            and not exactly one model under the base (UsageError, naming those found).
        OSError: the address cannot be bound.
    """
    config = dataclasses.replace(
        config, model_name=resolve_model_name(config.model_base, config.model_name))
    batching = (read_batching_parameters(config.batching_parameters_file)
                if config.enable_batching else None)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)

    def on_change() -> None:
        state = (
            health_pb2.HealthCheckResponse.SERVING
            if manager.served_versions()
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for service in HEALTH_SERVICES:
            health_servicer.set(service, state)

    manager = ModelManager(
        config.model_base,
        config.model_name,
        num_versions=config.num_versions,
        warmup=config.warmup,
        on_change=on_change,
        max_batch_size=config.max_batch_size,
        batch_chunk_size=config.batch_chunk_size,
        batching=batching,
    )
    on_change()
    manager.poll(settle=False)
    if not manager.served_versions():
        logger.warning(
            "No loadable version of %s under %s yet", config.model_name, config.model_base
        )

    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=config.max_workers, thread_name_prefix="serving"),
        options=[
            ("grpc.max_send_message_length", config.max_message_bytes),
            ("grpc.max_receive_message_length", config.max_message_bytes),
            ("grpc.so_reuseport", 0),
        ],
        maximum_concurrent_rpcs=config.max_concurrent_rpcs or 4 * config.max_workers,
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionServicer(manager), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(manager), server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)

    host = f"[{config.host}]" if ":" in config.host else config.host
    bind = f"{host}:{config.port}"
    try:
        port = _bind(server, bind, config.tls)
    except RuntimeError as e:
        port = 0
        logger.error("Could not bind %s: %s", bind, e)
    if port == 0:
        manager.stop()
        raise OSError(f"could not bind {bind}")
    server.start()
    manager.start_polling(config.poll_interval_s)
    handle = ServingServer(server, manager, health_servicer, config.host, port, config.grace_s)
    logger.info(
        "Serving model %s (versions %s) on %s%s%s",
        config.model_name,
        manager.served_versions(),
        handle.address,
        " with TLS" if config.tls else "",
        f" with batching {batching}" if batching else "",
    )
    return handle


def serve_until_signalled(config: ServerConfig, on_started: Callable[[ServingServer], None]) -> int:
    """Runs the server in the foreground until SIGTERM or SIGINT, then stops it gracefully.

    Must be called from the main thread (it installs the signal handlers).
    """
    stop = threading.Event()
    received: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        received.append(signum)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        handle = start_server(config)
        on_started(handle)
        while not stop.wait(0.5):
            pass
        logger.info("Received %s, stopping", signal.Signals(received[0]).name)
        handle.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
