"""Server-side batching for the local server, as tensorflow/serving's `--enable_batching` does.

`read_batching_parameters` reads the same `batching_parameters.txt` that `serving/deploy/` gives
TF Serving (the text format of its `BatchingParameters` proto; an unknown field is an error
naming it). `Batcher` joins concurrent Predict requests for one signature of one loaded version
into one model call and splits the answer back, scheduling as TF Serving's SharedBatchScheduler
does:

- a request joins the open batch of its (version, signature) queue while the batch stays within
  `max_batch_size` rows (and the model's own `max_batch_size`), else it opens a new batch; a
  request larger than `max_batch_size` is refused with INVALID_ARGUMENT, and one that finds
  `max_enqueued_batches` batches waiting in its queue with UNAVAILABLE;
- a batch runs, on one of `num_batch_threads` threads, once it is full or its first request has
  waited `batch_timeout_micros` (0: as soon as a thread is free);
- before it runs, requests whose deadline passed or whose client cancelled are dropped from it
  (each answered with its own status); when the joined call fails (the model's graph refuses a
  whole batch for one bad image), each request is run again alone, so only the bad one fails;
- `allowed_batch_sizes` pads a batch with copies of its last row up to the next allowed size;
  requests whose inputs differ past the first dimension never join (`pad_variable_length_inputs`
  is read but pads nothing: the served signatures' inputs are [N] strings).
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import grpc
import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format
from google.protobuf import wrappers_pb2

from siamese_tfx.serving.errors import ServingStatusError

logger = logging.getLogger(__name__)

Arrays = Mapping[str, np.ndarray]
RunFn = Callable[[Arrays], dict[str, np.ndarray]]
Interrupted = Callable[[], "ServingStatusError | None"]

# tensorflow/serving's BatchingParameters (servables/tensorflow/session_bundle_config.proto):
# field name -> (number, wrapper type or scalar type, repeated). Its message is built here
# because the tensorflow-serving-api package does not ship that proto.
_PROTO_FIELDS = (
    ("max_batch_size", 1, "Int64Value", False),
    ("batch_timeout_micros", 2, "Int64Value", False),
    ("max_enqueued_batches", 3, "Int64Value", False),
    ("num_batch_threads", 4, "Int64Value", False),
    ("thread_pool_name", 5, "StringValue", False),
    ("allowed_batch_sizes", 6, "int64", True),
    ("pad_variable_length_inputs", 7, "bool", False),
)
_PROTO_NAME = "tensorflow.serving.BatchingParameters"


def _batching_parameters_class() -> type:
    """The BatchingParameters message class, in a pool of its own."""
    pool = descriptor_pool.DescriptorPool()
    wrappers = descriptor_pb2.FileDescriptorProto()
    wrappers_pb2.DESCRIPTOR.CopyToProto(wrappers)
    pool.Add(wrappers)
    proto_file = descriptor_pb2.FileDescriptorProto(
        name="siamese_tfx/batching_parameters.proto", package="tensorflow.serving",
        syntax="proto3", dependency=[wrappers.name])
    message = proto_file.message_type.add(name="BatchingParameters")
    kinds = {"int64": descriptor_pb2.FieldDescriptorProto.TYPE_INT64,
             "bool": descriptor_pb2.FieldDescriptorProto.TYPE_BOOL}
    for name, number, kind, repeated in _PROTO_FIELDS:
        entry = message.field.add(
            name=name, number=number,
            label=(descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED if repeated
                   else descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL))
        if kind in kinds:
            entry.type = kinds[kind]
        else:
            entry.type = descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE
            entry.type_name = f".google.protobuf.{kind}"
    pool.Add(proto_file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(_PROTO_NAME))


@dataclass(frozen=True)
class BatchingParameters:
    """The settings of a BatchingParameters file; a field left out of the file keeps TF
    Serving's default (BasicBatchScheduler::Options)."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    thread_pool_name: str = "batch_threads"
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False

    def __post_init__(self) -> None:
        problems = []
        for name in ("max_batch_size", "max_enqueued_batches", "num_batch_threads"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1 (got {getattr(self, name)})")
        if self.batch_timeout_micros < 0:
            problems.append(f"batch_timeout_micros must be >= 0 (got {self.batch_timeout_micros})")
        sizes = list(self.allowed_batch_sizes)
        if sizes and (sizes != sorted(set(sizes)) or sizes[0] < 1):
            problems.append(f"allowed_batch_sizes must be positive and increasing (got {sizes})")
        elif sizes and sizes[-1] != self.max_batch_size:
            problems.append(f"the last of allowed_batch_sizes ({sizes[-1]}) must equal "
                            f"max_batch_size ({self.max_batch_size})")
        if problems:
            raise ValueError("; ".join(problems))

    def padded_size(self, rows: int) -> int:
        """The batch size a batch of `rows` runs at: the next allowed size (or `rows`)."""
        return next((size for size in self.allowed_batch_sizes if size >= rows), rows)


def parse_batching_parameters(text: str, source: str = "batching parameters") -> BatchingParameters:
    """BatchingParameters from the text format TF Serving reads (`max_batch_size { value: 32 }`).

    Raises:
        ValueError: naming `source` and what is wrong (a syntax error, an unknown field, a value
            out of range).
    """
    message = _batching_parameters_class()()
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as e:
        known = ", ".join(name for name, *_ in _PROTO_FIELDS)
        raise ValueError(f"{source}: not a valid BatchingParameters text proto: {e} "
                         f"(its fields: {known})") from e
    values = {}
    for name, _, kind, repeated in _PROTO_FIELDS:
        if repeated:
            values[name] = tuple(getattr(message, name))
        elif kind in ("int64", "bool"):
            values[name] = getattr(message, name)
        elif message.HasField(name):
            values[name] = getattr(message, name).value
    try:
        return BatchingParameters(**values)
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from e


def read_batching_parameters(path: str) -> BatchingParameters:
    """`parse_batching_parameters` of the file at `path` (empty path: TF Serving's defaults).

    Raises:
        ValueError: naming the file, when it cannot be read or parsed.
    """
    if not path:
        return BatchingParameters()
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read the batching parameters file {path}: {e}") from e
    return parse_batching_parameters(text, path)


class _Task:
    """One request waiting in a batch: its rows, and the answer or error it gets."""

    def __init__(self, inputs: Arrays, rows: int, interrupted: Interrupted | None) -> None:
        self.inputs = inputs
        self.rows = rows
        self.interrupted = interrupted
        self.outputs: dict[str, np.ndarray] | None = None
        self.error: ServingStatusError | None = None
        self.done = threading.Event()

    def finish(self, outputs: dict[str, np.ndarray] | None = None,
               error: ServingStatusError | None = None) -> None:
        self.outputs, self.error = outputs, error
        self.done.set()


class _Batch:
    def __init__(self, key: object, run: RunFn, limit: int) -> None:
        self.key = key
        self.run = run
        self.limit = limit
        self.tasks: list[_Task] = []
        self.rows = 0
        self.created = time.monotonic()
        self.closed = False


@dataclass(frozen=True)
class BatchCall:
    """One model call the batcher made: how many requests it answered and how many rows ran
    (after padding), and whether it succeeded."""

    signature_name: str
    requests: int
    rows: int
    ok: bool


class Batcher:
    """Joins concurrent requests per (loaded version, signature) into shared model calls.

    One Batcher serves every version of a model (like TF Serving's shared scheduler); its
    `num_batch_threads` threads run the batches. `calls` keeps the most recent model calls.
    """

    def __init__(self, parameters: BatchingParameters, history: int = 1000) -> None:
        self.parameters = parameters
        self.calls: collections.deque[BatchCall] = collections.deque(maxlen=history)
        self._cond = threading.Condition()
        self._queue: collections.deque[_Batch] = collections.deque()
        self._open: dict[object, _Batch] = {}
        self._enqueued: collections.Counter = collections.Counter()
        self._stopped = False
        self._threads = [
            threading.Thread(target=self._loop, name=f"{parameters.thread_pool_name}-{i}",
                             daemon=True)
            for i in range(parameters.num_batch_threads)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, key: tuple, run: RunFn, inputs: Arrays, rows: int,
               model_limit: int | None = None,
               interrupted: Interrupted | None = None) -> dict[str, np.ndarray]:
        """Runs `inputs` (`rows` rows of each array) in a batch with other requests of `key`
        and returns this request's rows of the outputs.

        Args:
            key: (the loaded version, signature name, ...): requests join only within a key.
            run: Runs the signature on joined arrays and returns its outputs as arrays.
            model_limit: The model's own max_batch_size; batches stay within it.
            interrupted: Asked when the batch is about to run; its error drops the request.
        Raises:
            ServingStatusError: INVALID_ARGUMENT for a request above max_batch_size,
                UNAVAILABLE when the queue is full or the batcher stopped, the request's own
                error from the model or from `interrupted`.
        """
        limit = self.parameters.max_batch_size
        if rows > limit:
            raise ServingStatusError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Task size {rows} is larger than maximum input batch size {limit} "
                "(batching_parameters max_batch_size); send at most "
                f"{limit} per request when batching is enabled")
        if model_limit is not None:
            limit = min(limit, max(model_limit, 1))
        task = _Task(inputs, rows, interrupted)
        with self._cond:
            if self._stopped:
                raise ServingStatusError(grpc.StatusCode.UNAVAILABLE, "the server is stopping")
            batch = self._open.get(key)
            if batch is None or batch.rows + rows > limit:
                if batch is not None:
                    self._close(batch)
                if self._enqueued[key] >= self.parameters.max_enqueued_batches:
                    raise ServingStatusError(
                        grpc.StatusCode.UNAVAILABLE,
                        "The batch scheduling queue to which this task was submitted is full "
                        f"({self.parameters.max_enqueued_batches} batches waiting: "
                        "max_enqueued_batches)")
                batch = _Batch(key, run, limit)
                self._open[key] = batch
                self._queue.append(batch)
                self._enqueued[key] += 1
            batch.tasks.append(task)
            batch.rows += rows
            if batch.rows >= limit:
                self._close(batch)
            self._cond.notify()
        task.done.wait()
        if task.error is not None:
            raise task.error
        assert task.outputs is not None
        return task.outputs

    def stop(self) -> None:
        """Fails the requests still waiting (UNAVAILABLE) and stops the batch threads once
        they finish the batch they run."""
        with self._cond:
            self._stopped = True
            waiting = list(self._queue)
            self._queue.clear()
            self._open.clear()
            self._cond.notify_all()
        for batch in waiting:
            for task in batch.tasks:
                task.finish(error=ServingStatusError(
                    grpc.StatusCode.UNAVAILABLE, "the server stopped before running the request"))
        for thread in self._threads:
            thread.join()

    def _close(self, batch: _Batch) -> None:
        batch.closed = True
        if self._open.get(batch.key) is batch:
            del self._open[batch.key]

    def _next_batch(self) -> _Batch | None:
        """Waits for a batch that may run (full, or its first request waited the timeout) and
        takes it off the queue; None once the batcher stops. Called with the lock held."""
        timeout_s = self.parameters.batch_timeout_micros / 1e6
        while not self._stopped:
            now = time.monotonic()
            wake = None
            for batch in self._queue:
                due = batch.created + timeout_s
                if batch.closed or due <= now:
                    self._queue.remove(batch)
                    self._close(batch)
                    self._enqueued[batch.key] -= 1
                    if not self._enqueued[batch.key]:
                        del self._enqueued[batch.key]
                    return batch
                wake = due if wake is None else min(wake, due)
            self._cond.wait(None if wake is None else wake - now)
        return None

    def _loop(self) -> None:
        while True:
            with self._cond:
                batch = self._next_batch()
            if batch is None:
                return
            try:
                self._run(batch)
            except Exception as e:  # a crash fails this batch's requests, not the thread.
                logger.exception("Batch of %s failed", batch.key[1])
                error = ServingStatusError(grpc.StatusCode.INTERNAL, f"{type(e).__name__}: {e}")
                for task in batch.tasks:
                    if not task.done.is_set():
                        task.finish(error=error)

    def _run(self, batch: _Batch) -> None:
        live = []
        for task in batch.tasks:
            stop = task.interrupted() if task.interrupted is not None else None
            if stop is not None:
                task.finish(error=stop)
            else:
                live.append(task)
        if not live:
            return
        if len(live) == 1:
            self._run_alone(batch, live[0])
            return
        names = list(live[0].inputs)
        rows = sum(task.rows for task in live)
        joined = {name: np.concatenate([task.inputs[name] for task in live]) for name in names}
        joined = _padded(joined, self.parameters.padded_size(rows) - rows)
        signature_name = batch.key[1]
        try:
            outputs = batch.run(joined)
        except ServingStatusError as e:
            self.calls.append(BatchCall(signature_name, len(live), rows, ok=False))
            logger.info("A batch of %d %s requests failed (%s); running each alone",
                        len(live), signature_name, e.message)
            for task in live:
                self._run_alone(batch, task)
            return
        self.calls.append(BatchCall(signature_name, len(live), rows, ok=True))
        start = 0
        for task in live:
            task.finish({name: value[start:start + task.rows] for name, value in outputs.items()})
            start += task.rows

    def _run_alone(self, batch: _Batch, task: _Task) -> None:
        padding = self.parameters.padded_size(task.rows) - task.rows
        try:
            outputs = batch.run(_padded(task.inputs, padding))
        except ServingStatusError as e:
            self.calls.append(BatchCall(batch.key[1], 1, task.rows, ok=False))
            task.finish(error=e)
            return
        self.calls.append(BatchCall(batch.key[1], 1, task.rows, ok=True))
        task.finish({name: value[:task.rows] for name, value in outputs.items()})


def _padded(arrays: Arrays, extra: int) -> dict[str, np.ndarray]:
    """`arrays` with `extra` copies of their last row appended (allowed_batch_sizes)."""
    if extra <= 0 or not arrays:
        return dict(arrays)
    return {name: np.concatenate([value, np.repeat(value[-1:], extra, axis=0)])
            for name, value in arrays.items()}


def batch_rows(arrays: Sequence[np.ndarray]) -> int | None:
    """The common first dimension of `arrays`, or None when they have none in common."""
    sizes = {value.shape[0] if value.ndim else None for value in arrays}
    if len(sizes) != 1:
        return None
    (size,) = sizes
    return size
