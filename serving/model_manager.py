"""Finds, loads, warms up and hot-swaps the versions of one model, as TF Serving's manager does.

Pusher writes `<model_base>/<model_name>/<version>/`. The manager polls that folder, loads a new
version fully (and replays its `assets.extra/tf_serving_warmup_requests`) while the old one keeps
serving, then swaps the set of served versions in one assignment, so a request in flight keeps the
version it started with. A version that fails to load is reported in its status and the versions
already loaded keep serving. Every request runs the SavedModel's own signature functions.

Requests are checked before any tensor is built: each TensorProto must carry exactly the values
its shape declares (TensorFlow would repeat one value to fill 20,000), and no batch may exceed
`max_batch_size`. A large batch runs in chunks of `batch_chunk_size`, asking the caller between
chunks whether to go on, so a cancelled request or one whose deadline passed frees its worker.
Version folders are named like TF Serving's: ASCII digits that fit an int64; anything else in the
model folder is logged once and ignored. With batching parameters (`serving/batching.py`), checked
requests of a batch-major signature are joined with concurrent ones into shared model calls.
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
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, prediction_log_pb2

from siamese_tfx.components.contract import errors, signatures
from siamese_tfx.serving.batching import Batcher, BatchingParameters, batch_rows
from siamese_tfx.serving.errors import ServingStatusError

logger = logging.getLogger(__name__)

# TF Serving replays at most this many warmup records per version.
MAX_WARMUP_RECORDS = 1000
# Version folder names, as TF Serving reads them: ASCII digits (str.isdigit() also takes "²").
_VERSION_NAME = re.compile(r"[0-9]+")
_MAX_VERSION = 2**63 - 1  # versions are int64 in TF Serving's protos
# Values per element of a TensorProto's typed field (complex numbers take two).
_COMPLEX_FIELDS = ("scomplex_val", "dcomplex_val")
_VALUE_FIELDS = ("half_val", "float_val", "double_val", "int_val", "string_val", "int64_val",
                 "bool_val", "uint32_val", "uint64_val", *_COMPLEX_FIELDS)

State = get_model_status_pb2.ModelVersionStatus.State
_GRPC_CODES = {code.value[0]: code for code in grpc.StatusCode}


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


def _value_count_problem(proto: tensor_pb2.TensorProto) -> str | None:
    """What is wrong with the number of values `proto` carries for its shape (None: nothing),
    read from the message alone, before anything is converted."""
    shape = [d.size for d in proto.tensor_shape.dim]
    if any(d < 0 for d in shape):
        return f"its shape {_shape_text(shape)} has a negative dimension"
    expected = 1
    for d in shape:
        expected *= d
    if proto.tensor_content:
        try:
            item_bytes = tf.dtypes.as_dtype(proto.dtype).size
        except TypeError:
            return None  # make_ndarray names the dtype it cannot read
        if len(proto.tensor_content) == expected * item_bytes:
            return None
        return (f"it carries {len(proto.tensor_content)} bytes of tensor_content but its shape "
                f"{_shape_text(shape)} needs {expected} values of {item_bytes} bytes")
    carried = sum(len(getattr(proto, name)) // (2 if name in _COMPLEX_FIELDS else 1)
                  for name in _VALUE_FIELDS)
    if carried == expected:
        return None
    return (f"it holds {carried} value(s) but its shape {_shape_text(shape)} declares "
            f"{expected}; send every value (this server does not repeat the last one to fill "
            "the shape)")


def _batch_major(signature: meta_graph_pb2.SignatureDef) -> bool:
    """Whether every input and output of a signature has a first dimension of any size (-1),
    so its requests can be cut into chunks or joined into batches."""
    infos = list(signature.inputs.values()) + list(signature.outputs.values())
    return all(not i.tensor_shape.unknown_rank and i.tensor_shape.dim
               and i.tensor_shape.dim[0].size == -1 for i in infos)


def is_version_name(name: str) -> bool:
    """Whether a folder name is a version number, as TF Serving reads them: ASCII digits that
    fit an int64."""
    return _VERSION_NAME.fullmatch(name) is not None and int(name) <= _MAX_VERSION


def model_names(model_base: str) -> list[str]:
    """The folders of `model_base` that hold at least one version folder: the models it holds."""
    try:
        entries = sorted(os.listdir(model_base))
    except OSError:
        return []
    return [name for name in entries
            if os.path.isdir(os.path.join(model_base, name))
            and any(is_version_name(v) and os.path.isdir(os.path.join(model_base, name, v))
                    for v in _listdir(os.path.join(model_base, name)))]


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def resolve_model_name(model_base: str, model_name: str) -> str:
    """`model_name`, or when it is empty the only model under `model_base`; raises UsageError
    naming the models found when there is not exactly one."""
    if model_name:
        return model_name
    found = model_names(model_base)
    if len(found) == 1:
        return found[0]
    if not found:
        raise errors.UsageError(
            f"--model-base {model_base!r} holds no model (no <model-name>/<version>/ folder); "
            "give --model-name to wait for one to be pushed")
    raise errors.UsageError(f"--model-base {model_base!r} holds {len(found)} models "
                            f"({', '.join(found)}): choose one with --model-name")


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
    """One loaded SavedModel version: its signature functions and their SignatureDefs.

    Args:
        max_batch_size: Largest batch (first dimension of an input) a request may carry; None:
            no limit but the model's own.
        batch_chunk_size: Batches larger than this run in chunks of it (None: in one call).
        batcher: Joins concurrent requests of a batch-major signature into shared model calls
            (None: each request runs alone).
    """

    def __init__(self, model_name: str, version: int, path: str, *,
                 max_batch_size: int | None = None, batch_chunk_size: int | None = None,
                 batcher: Batcher | None = None) -> None:
        self.model_name = model_name
        self.version = version
        self.path = path
        self.max_batch_size = max_batch_size
        self.batch_chunk_size = batch_chunk_size
        self.batcher = batcher
        self.signature_defs = read_signature_defs(path)
        self._model = tf.saved_model.load(path)
        self._functions = dict(self._model.signatures)
        self._dtypes = {key: {name: tf.dtypes.as_dtype(info.dtype)
                              for name, info in signature.inputs.items()}
                        for key, signature in self.signature_defs.items()}
        limit = getattr(self._model, signatures.MAX_BATCH_SIZE_ATTR, None)
        # The model's own limit (ServingLimitsConfig), which joined batches must respect.
        self.model_max_batch_size = int(limit.numpy()) if limit is not None else None
        self.warmup_requests_replayed = 0

    def signature_def_map(self) -> get_model_metadata_pb2.SignatureDefMap:
        """All SignatureDefs, as GetModelMetadata packs them."""
        return get_model_metadata_pb2.SignatureDefMap(signature_def=self.signature_defs)

    def predict(
        self,
        signature_name: str,
        inputs: Mapping[str, tensor_pb2.TensorProto],
        output_filter: Iterable[str] = (),
        interrupted: Callable[[], ServingStatusError | None] | None = None,
        *,
        batching: bool = True,
    ) -> dict[str, tensor_pb2.TensorProto]:
        """Runs one signature on TensorProto inputs after checking them against its SignatureDef.

        With a batcher, a request of a batch-major signature runs joined with concurrent ones
        (checked alone first, so a malformed request never joins a batch).

        Args:
            interrupted: Asked before each chunk of a large batch (and before a joined batch
                runs); the error it returns (e.g. CANCELLED once the client has gone) stops the
                request there.
            batching: False runs the request alone even with a batcher (warmup replay).
        Raises:
            ServingStatusError: FAILED_PRECONDITION for an unknown signature, INVALID_ARGUMENT for
                inputs that do not match it, that are larger than max_batch_size, or that the
                model rejects (e.g. an undecodable image); the error `interrupted` returned.
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
        arrays = self._check_inputs(signature_name, signature, inputs)
        wanted = list(output_filter)
        unknown = sorted(set(wanted) - set(signature.outputs))
        if unknown:
            raise ServingStatusError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"output tensor alias(es) {unknown} not found in signature {signature_name!r}; "
                f"its outputs are {sorted(signature.outputs)}",
            )
        names = wanted or list(signature.outputs)
        rows = batch_rows(list(arrays.values()))
        if batching and self.batcher is not None and rows is not None and _batch_major(signature):
            # Only requests whose inputs agree past the first dimension can be joined.
            key = (self, signature_name, tuple(
                (name, value.shape[1:], value.dtype.str) for name, value in sorted(arrays.items())))
            outputs = self.batcher.submit(
                key, lambda joined: self._run(signature_name, joined), arrays, rows,
                model_limit=self.model_max_batch_size, interrupted=interrupted)
            return {name: tf.make_tensor_proto(outputs[name]) for name in names}
        chunks = self._chunks(signature, rows)
        if not chunks:
            outputs = self._run(signature_name, arrays)
            return {name: tf.make_tensor_proto(outputs[name]) for name in names}
        parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
        for index, (start, end) in enumerate(chunks):
            stop = interrupted() if interrupted is not None else None
            if stop is not None:
                logger.info("Stopped %s request to %s version %d after %d of %d chunks: %s",
                            signature_name, self.model_name, self.version, index, len(chunks),
                            stop.message)
                raise stop
            outputs = self._run(signature_name, {k: v[start:end] for k, v in arrays.items()})
            for name in names:
                parts[name].append(outputs[name])
        return {name: tf.make_tensor_proto(np.concatenate(parts[name])) for name in names}

    def _run(self, signature_name: str,
             arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Calls a signature on arrays (converted to its input dtypes); its outputs as arrays,
        its errors as ServingStatusError."""
        dtypes = self._dtypes[signature_name]
        try:
            inputs = {name: tf.constant(value, dtype=dtypes[name])
                      for name, value in arrays.items()}
            outputs = self._functions[signature_name](**inputs)
            return {name: value.numpy() for name, value in outputs.items()}
        except tf.errors.OpError as e:
            raise ServingStatusError(grpc_code_from_tf(e), _short_tf_message(e)) from e
        except (TypeError, ValueError) as e:
            raise ServingStatusError(grpc.StatusCode.INVALID_ARGUMENT, str(e)) from e

    def _chunks(self, signature: meta_graph_pb2.SignatureDef,
                rows: int | None) -> list[tuple[int, int]]:
        """[start, end) chunks of a batch of `rows` when it is larger than batch_chunk_size and
        every input and output of the signature is batch-major (first dimension -1), else []."""
        chunk = self.batch_chunk_size
        if chunk is None or rows is None:
            return []  # inputs of differing batch sizes go to the model whole, to refuse them
        if rows <= chunk or not _batch_major(signature):
            return []
        return [(start, min(start + chunk, rows)) for start in range(0, rows, chunk)]

    def _check_inputs(
        self,
        signature_name: str,
        signature: meta_graph_pb2.SignatureDef,
        inputs: Mapping[str, tensor_pb2.TensorProto],
    ) -> dict[str, np.ndarray]:
        expected = set(signature.inputs)
        sent = set(inputs)
        if sent != expected:
            raise ServingStatusError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"input names do not match signature {signature_name!r}: "
                f"sent extra {sorted(sent - expected)}, missing but required "
                f"{sorted(expected - sent)}",
            )
        arrays = {}
        for name, proto in inputs.items():
            info = signature.inputs[name]
            if proto.dtype != info.dtype:
                raise ServingStatusError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"input {name!r} of signature {signature_name!r} expects dtype "
                    f"{_dtype_name(info.dtype)} but {_dtype_name(proto.dtype)} was sent",
                )
            sent_shape = [d.size for d in proto.tensor_shape.dim]
            problem = _value_count_problem(proto)
            if problem is not None:
                raise ServingStatusError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"input {name!r} of signature {signature_name!r} is not a valid tensor: "
                    f"{problem}",
                )
            if self.max_batch_size is not None and sent_shape and (
                    sent_shape[0] > self.max_batch_size):
                raise ServingStatusError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"input {name!r} of signature {signature_name!r} holds a batch of "
                    f"{sent_shape[0]}, above this server's max_batch_size of "
                    f"{self.max_batch_size}; send at most {self.max_batch_size} per request",
                )
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
            arrays[name] = array
        return arrays

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
                self.predict(request.model_spec.signature_name, request.inputs,
                             request.output_filter, batching=False)
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
        max_batch_size: Largest batch a request may carry (None: no limit but the model's).
        batch_chunk_size: Larger batches run in chunks of this many (None: in one call).
        batching: Join concurrent requests into shared model calls with these parameters
            (TF Serving's --enable_batching; None: each request runs alone).
    """

    def __init__(
        self,
        model_base: str,
        model_name: str,
        *,
        num_versions: int = 1,
        warmup: bool = True,
        on_change: Callable[[], None] | None = None,
        max_batch_size: int | None = None,
        batch_chunk_size: int | None = None,
        batching: BatchingParameters | None = None,
    ) -> None:
        if num_versions < 1:
            raise ValueError("num_versions must be >= 1")
        self.model_name = model_name
        self.model_dir = os.path.join(model_base, model_name)
        self.num_versions = num_versions
        self.warmup = warmup
        self.max_batch_size = max_batch_size
        self.batch_chunk_size = batch_chunk_size
        self._on_change = on_change
        self.batcher = Batcher(batching) if batching is not None else None
        self._ignored_names: set[str] = set()
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
        """Version folders (named by `is_version_name`) that hold a saved_model.pb. Other
        folders are logged once each and ignored, as are further names of a version already
        found ("7" and "007": the first in sorted order is the version)."""
        if not os.path.isdir(self.model_dir):
            return {}
        found: dict[int, str] = {}
        for name in sorted(os.listdir(self.model_dir)):
            path = os.path.join(self.model_dir, name)
            if not os.path.isdir(path):
                continue
            if not is_version_name(name) or int(name) in found:
                if name not in self._ignored_names:
                    self._ignored_names.add(name)
                    logger.warning(
                        "Ignoring %s: not a version folder of %s (versions are named by ASCII "
                        "digits that fit an int64, each version once)", path, self.model_name)
                continue
            if os.path.isfile(os.path.join(path, "saved_model.pb")):
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
            loaded = LoadedVersion(self.model_name, version, path,
                                   max_batch_size=self.max_batch_size,
                                   batch_chunk_size=self.batch_chunk_size,
                                   batcher=self.batcher)
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
        """Stops polling and the batcher (served versions stay loaded until the manager is
        dropped)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self.batcher is not None:
            self.batcher.stop()

