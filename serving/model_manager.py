"""Finds, loads, warms up and hot-swaps the versions of one model, as TF Serving's manager does.

Pusher writes `<model_base>/<model_name>/<version>/`. The manager polls that folder, loads a new
version fully (and replays its `assets.extra/tf_serving_warmup_requests`) while the old one keeps
serving, then swaps the set of served versions in one assignment, so a request in flight keeps the
version it started with. A version that fails to load is reported in its status and the versions
already loaded keep serving. Every request runs the SavedModel's own signature functions.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence

import grpc
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, prediction_log_pb2

from siamese_tfx.components.contract import signatures

logger = logging.getLogger(__name__)

# TF Serving replays at most this many warmup records per version.
MAX_WARMUP_RECORDS = 1000

State = get_model_status_pb2.ModelVersionStatus.State
_GRPC_CODES = {code.value[0]: code for code in grpc.StatusCode}


class ServingStatusError(Exception):
    """A request or load failure with the gRPC status code TF Serving would answer with."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def grpc_code_from_tf(error: BaseException) -> grpc.StatusCode:
    """The gRPC status code for a TensorFlow error (both use the same numbering)."""
    if isinstance(error, tf.errors.OpError):
        return _GRPC_CODES.get(error.error_code, grpc.StatusCode.UNKNOWN)
    return grpc.StatusCode.UNKNOWN


def _short_tf_message(error: BaseException) -> str:
    """A TF error's own message, without the graph-node and stack-trace lines around it."""
    text = error.message if isinstance(error, tf.errors.OpError) else str(error)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    for index, line in enumerate(lines):
        if line.startswith("[[") and index > 0:
            return lines[index - 1]
    return re.sub(r"\s*\[Op:.*$", "", lines[-1])


def _dtype_name(dtype: int) -> str:
    if dtype == types_pb2.DT_INVALID:
        return "invalid"
    try:
        return tf.dtypes.as_dtype(dtype).name
    except TypeError:
        return f"unknown dtype {dtype}"


def _shape_text(shape: Sequence[int] | None) -> str:
    return "<unknown>" if shape is None else "[" + ",".join(str(d) for d in shape) + "]"


@dataclass(frozen=True)
class VersionStatus:
    """One version's state, as GetModelStatus reports it."""

    version: int
    state: int
    error_code: grpc.StatusCode = grpc.StatusCode.OK
    error_message: str = ""

    def to_proto(self) -> get_model_status_pb2.ModelVersionStatus:
        """As a GetModelStatusResponse entry."""
        status = get_model_status_pb2.ModelVersionStatus(version=self.version, state=self.state)
        status.status.error_code = self.error_code.value[0]
        status.status.error_message = self.error_message
        return status


def read_signature_defs(saved_model_dir: str) -> dict[str, meta_graph_pb2.SignatureDef]:
    """The SignatureDefs of the `serve` MetaGraph in `saved_model_dir`/saved_model.pb."""
    path = os.path.join(saved_model_dir, "saved_model.pb")
    with tf.io.gfile.GFile(path, "rb") as f:
        saved_model = saved_model_pb2.SavedModel.FromString(f.read())
    for meta_graph in saved_model.meta_graphs:
        if "serve" in meta_graph.meta_info_def.tags:
            return dict(meta_graph.signature_def)
    raise ValueError(f"{path} has no MetaGraph tagged 'serve'")


class LoadedVersion:
    """One loaded SavedModel version: its signature functions and their SignatureDefs."""

    def __init__(self, model_name: str, version: int, path: str) -> None:
        self.model_name = model_name
        self.version = version
        self.path = path
        self.signature_defs = read_signature_defs(path)
        self._model = tf.saved_model.load(path)
        self._functions = dict(self._model.signatures)
        self.warmup_requests_replayed = 0

    def signature_def_map(self) -> get_model_metadata_pb2.SignatureDefMap:
        """All SignatureDefs, as GetModelMetadata packs them."""
        return get_model_metadata_pb2.SignatureDefMap(signature_def=self.signature_defs)

    def predict(
        self,
        signature_name: str,
        inputs: Mapping[str, tensor_pb2.TensorProto],
        output_filter: Iterable[str] = (),
    ) -> dict[str, tensor_pb2.TensorProto]:
        """Runs one signature on TensorProto inputs after checking them against its SignatureDef.

        Raises:
            ServingStatusError: FAILED_PRECONDITION for an unknown signature, INVALID_ARGUMENT for
                inputs that do not match it or that the model rejects (e.g. an undecodable image).
        """
        signature_name = signature_name or signatures.SERVING_DEFAULT
        signature = self.signature_defs.get(signature_name)
        function = self._functions.get(signature_name)
        if signature is None or function is None:
            raise ServingStatusError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f'Serving signature key "{signature_name}" not found. Known signatures: '
                f"{sorted(self._functions)}",
            )
        tensors = self._check_inputs(signature_name, signature, inputs)
        wanted = list(output_filter)
        unknown = sorted(set(wanted) - set(signature.outputs))
        if unknown:
            raise ServingStatusError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"output tensor alias(es) {unknown} not found in signature {signature_name!r}; "
                f"its outputs are {sorted(signature.outputs)}",
            )
        try:
            outputs = function(**tensors)
        except tf.errors.OpError as e:
            raise ServingStatusError(grpc_code_from_tf(e), _short_tf_message(e)) from e
        except (TypeError, ValueError) as e:
            raise ServingStatusError(grpc.StatusCode.INVALID_ARGUMENT, str(e)) from e
        names = wanted or list(outputs)
        return {name: tf.make_tensor_proto(outputs[name].numpy()) for name in names}

    def _check_inputs(
        self,
        signature_name: str,
        signature: meta_graph_pb2.SignatureDef,
        inputs: Mapping[str, tensor_pb2.TensorProto],
    ) -> dict[str, tf.Tensor]:
        expected = set(signature.inputs)
        sent = set(inputs)
        if sent != expected:
            raise ServingStatusError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"input names do not match signature {signature_name!r}: "
                f"sent extra {sorted(sent - expected)}, missing but required "
                f"{sorted(expected - sent)}",
            )
        tensors = {}
        for name, proto in inputs.items():
            info = signature.inputs[name]
            if proto.dtype != info.dtype:
                raise ServingStatusError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"input {name!r} of signature {signature_name!r} expects dtype "
                    f"{_dtype_name(info.dtype)} but {_dtype_name(proto.dtype)} was sent",
                )
            sent_shape = [d.size for d in proto.tensor_shape.dim]
            if not info.tensor_shape.unknown_rank:
                want_shape = [d.size for d in info.tensor_shape.dim]
                fits = len(sent_shape) == len(want_shape) and all(
                    w < 0 or w == s for w, s in zip(want_shape, sent_shape)
                )
                if not fits:
                    raise ServingStatusError(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f"input {name!r} of signature {signature_name!r} expects shape "
                        f"{_shape_text(want_shape)} (-1: any size) but "
                        f"{_shape_text(sent_shape)} was sent",
                    )
            try:
                array = tf.make_ndarray(proto)
            except (TypeError, ValueError) as e:
                raise ServingStatusError(
                    grpc.StatusCode.INVALID_ARGUMENT, f"input {name!r} is not a valid tensor: {e}"
                ) from e
            if list(array.shape) != sent_shape:
                raise ServingStatusError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"input {name!r} holds {array.size} values but its shape is "
                    f"{_shape_text(sent_shape)}",
                )
            tensors[name] = tf.constant(array, dtype=tf.dtypes.as_dtype(info.dtype))
        return tensors

    def replay_warmup(self) -> int:
        """Runs the version's warmup requests, as TF Serving does before serving it.

        Returns:
            How many requests were replayed (0 without a warmup file).
        Raises:
            ServingStatusError: a warmup request failed, so the version must not be served.
        """
        path = os.path.join(self.path, signatures.WARMUP_DIR, signatures.WARMUP_FILE)
        if not tf.io.gfile.exists(path):
            return 0
        count = 0
        for record in tf.data.TFRecordDataset(path).take(MAX_WARMUP_RECORDS):
            log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
            if log.WhichOneof("log_type") != "predict_log":
                raise ServingStatusError(
                    grpc.StatusCode.UNIMPLEMENTED,
                    f"warmup record {count} is a {log.WhichOneof('log_type')}; only predict_log "
                    "records are replayed by this server",
                )
            request = log.predict_log.request
            try:
                self.predict(
                    request.model_spec.signature_name, request.inputs, request.output_filter
                )
            except ServingStatusError as e:
                raise ServingStatusError(e.code, f"warmup request {count} failed: {e.message}")
            count += 1
        self.warmup_requests_replayed = count
        return count


def _fingerprint(path: str) -> tuple[tuple[str, int, int], ...]:
    """Names, sizes and mtimes of every file under `path`: changes while Pusher still copies."""
    entries = []
    for root, _, files in os.walk(path):
        for name in files:
            full = os.path.join(root, name)
            try:
                stat = os.stat(full)
            except FileNotFoundError:
                continue
            entries.append((os.path.relpath(full, path), stat.st_size, stat.st_mtime_ns))
    return tuple(sorted(entries))


class ModelManager:
    """Serves the newest `num_versions` loadable versions of one model and hot-swaps new ones.

    Args:
        model_base: The folder Pusher writes to (holding `<model_name>/<version>/`).
        model_name: The model's name, also the folder name under `model_base`.
        num_versions: How many of the newest versions to keep loaded (TF Serving's `latest`
            version policy; 1 is its default).
        warmup: Replay `assets.extra/tf_serving_warmup_requests` before serving a version.
        on_change: Called (without arguments) after the set of served versions changed.
    """

    def __init__(
        self,
        model_base: str,
        model_name: str,
        *,
        num_versions: int = 1,
        warmup: bool = True,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        if num_versions < 1:
            raise ValueError("num_versions must be >= 1")
        self.model_name = model_name
        self.model_dir = os.path.join(model_base, model_name)
        self.num_versions = num_versions
        self.warmup = warmup
        self._on_change = on_change
        self._served: dict[int, LoadedVersion] = {}
        self._statuses: dict[int, VersionStatus] = {}
        self._failed: dict[int, tuple] = {}
        self._seen: dict[int, tuple] = {}
        self._poll_lock = threading.Lock()
        self._status_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def get(self, version: int | None = None) -> LoadedVersion:
        """The newest served version, or the given one.

        Raises:
            ServingStatusError: NOT_FOUND when no version (or not that one) is being served.
        """
        served = self._served
        if version is None:
            if not served:
                raise ServingStatusError(
                    grpc.StatusCode.NOT_FOUND,
                    f"Servable not found for request: Latest({self.model_name}): no version of "
                    "the model is loaded yet",
                )
            return served[max(served)]
        loaded = served.get(version)
        if loaded is None:
            raise ServingStatusError(
                grpc.StatusCode.NOT_FOUND,
                f"Servable not found for request: Specific({self.model_name}, {version}); "
                f"served versions: {sorted(served)}",
            )
        return loaded

    def served_versions(self) -> list[int]:
        """The versions answering requests now, oldest first."""
        return sorted(self._served)

    def statuses(self, version: int | None = None) -> list[VersionStatus]:
        """Every known version's state (or just the given version's), newest first.

        Raises:
            ServingStatusError: NOT_FOUND when the model or the version is unknown.
        """
        with self._status_lock:
            statuses = dict(self._statuses)
        if version is not None:
            if version not in statuses:
                raise ServingStatusError(
                    grpc.StatusCode.NOT_FOUND,
                    f"Could not find version {version} of model {self.model_name}",
                )
            return [statuses[version]]
        if not statuses:
            raise ServingStatusError(
                grpc.StatusCode.NOT_FOUND,
                f"Could not find any versions of model {self.model_name}",
            )
        return [statuses[v] for v in sorted(statuses, reverse=True)]

    def _set_status(self, status: VersionStatus) -> None:
        with self._status_lock:
            self._statuses[status.version] = status

    def _scan(self) -> dict[int, str]:
        """Numeric version folders that hold a saved_model.pb."""
        if not os.path.isdir(self.model_dir):
            return {}
        found = {}
        for name in os.listdir(self.model_dir):
            path = os.path.join(self.model_dir, name)
            if name.isdigit() and os.path.isfile(os.path.join(path, "saved_model.pb")):
                found[int(name)] = path
        return found

    def poll(self, *, settle: bool = True) -> list[int]:
        """Looks for new, changed or removed versions once and swaps in what changed.

        Args:
            settle: Load a new version only once its files are unchanged since the previous poll
                (so a version Pusher is still copying is not loaded half-written).
        Returns:
            The versions served after this poll.
        """
        with self._poll_lock:
            on_disk = self._scan()
            fingerprints = {v: _fingerprint(p) for v, p in on_disk.items()}
            previous_seen, self._seen = self._seen, fingerprints
            served = dict(self._served)
            keep: dict[int, LoadedVersion] = {}
            for version in sorted(on_disk, reverse=True):
                if len(keep) == self.num_versions:
                    break
                if version in served:
                    keep[version] = served[version]
                    continue
                fingerprint = fingerprints[version]
                if self._failed.get(version) == fingerprint:
                    continue
                if settle and previous_seen.get(version) != fingerprint:
                    continue
                loaded = self._load(version, on_disk[version], fingerprint)
                if loaded is not None:
                    keep[version] = loaded
            if keep.keys() != served.keys():
                self._served = keep
                for version in sorted(set(served) - set(keep)):
                    self._set_status(VersionStatus(version, State.END))
                    logger.info("Unloaded %s version %d", self.model_name, version)
                logger.info("Serving %s versions %s", self.model_name, sorted(keep))
                if self._on_change is not None:
                    self._on_change()
            return sorted(keep)

    def _load(self, version: int, path: str, fingerprint: tuple) -> LoadedVersion | None:
        self._set_status(VersionStatus(version, State.LOADING))
        logger.info("Loading %s version %d from %s", self.model_name, version, path)
        started = time.monotonic()
        try:
            loaded = LoadedVersion(self.model_name, version, path)
            replayed = loaded.replay_warmup() if self.warmup else 0
        except ServingStatusError as e:
            return self._load_failed(version, fingerprint, e.code, e.message)
        except Exception as e:  # any load failure must leave the old version up.
            message = f"{type(e).__name__}: {_short_tf_message(e)}"
            return self._load_failed(version, fingerprint, grpc_code_from_tf(e), message)
        self._failed.pop(version, None)
        self._set_status(VersionStatus(version, State.AVAILABLE))
        logger.info(
            "Loaded %s version %d in %.1f s (replayed %d warmup requests)",
            self.model_name,
            version,
            time.monotonic() - started,
            replayed,
        )
        return loaded

    def _load_failed(
        self, version: int, fingerprint: tuple, code: grpc.StatusCode, message: str
    ) -> None:
        if code == grpc.StatusCode.OK:
            code = grpc.StatusCode.UNKNOWN
        self._failed[version] = fingerprint
        self._set_status(VersionStatus(version, State.END, code, message))
        logger.error(
            "Failed to load %s version %d (%s): %s; still serving versions %s",
            self.model_name,
            version,
            code.name,
            message,
            sorted(self._served),
        )
        return None

    def start_polling(self, interval_s: float) -> None:
        """Polls the model folder every `interval_s` seconds in a daemon thread."""
        if self._thread is not None:
            return

        def loop() -> None:
            while not self._stop.wait(interval_s):
                try:
                    self.poll()
                except Exception:  # keep polling after e.g. a vanished folder.
                    logger.exception("Polling %s failed", self.model_dir)

        self._thread = threading.Thread(target=loop, name="model-poller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stops polling (served versions stay loaded until the manager is dropped)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

