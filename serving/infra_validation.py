"""Infra validation: does a candidate SavedModel answer through the serving stack, and answer the
same as it does in-process?

TFX's InfraValidator starts TF Serving in Docker (or Kubernetes through the deprecated v1
runner). This check runs anywhere the project is installed, locally and in a Kubeflow v2 pod: it
copies the candidate into a scratch model base as version 1, starts the model server
(`python -m siamese_tfx.serving.cli serve`) in a separate process on 127.0.0.1, waits until that version is
AVAILABLE (the server replays the model's warmup requests while loading it, as TF Serving does),
sends every request over gRPC, and compares each answer with the same signature run in this
process: the outputs must be the same names, shapes and dtypes, finite, and equal within
`tolerance`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import (get_model_status_pb2, model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc)

from siamese_tfx.components.contract import signatures

logger = logging.getLogger(__name__)

VERSION = 1  # The candidate's version number in the scratch model base.
_ANNOUNCEMENT = re.compile(r"^Serving model \S+ versions \[.*\] on (\S+)$")
_LOG_TAIL_LINES = 15


@dataclass
class RequestCheck:
    """One request sent through the server and compared with the in-process answer."""

    source: str  # where the request came from, e.g. "warmup request 3", "contract: compare"
    signature: str
    ok: bool
    problem: str = ""
    max_abs_difference: float = 0.0
    seconds: float = 0.0


@dataclass
class InfraReport:
    """The verdict: blessed only when the server loaded the model and every check passed."""

    blessed: bool
    reason: str  # why not blessed ("" when blessed)
    model_path: str
    server_seconds: float = 0.0  # from starting the server process to the version AVAILABLE
    checks: list[RequestCheck] = field(default_factory=list)
    server_log_tail: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1)

    def format(self) -> str:
        verdict = "passed" if self.blessed else f"FAILED: {self.reason}"
        passed = sum(c.ok for c in self.checks)
        return (f"Infra validation {verdict} ({passed}/{len(self.checks)} requests answered "
                f"through the serving stack as in-process; server ready in "
                f"{self.server_seconds:.1f} s)")


class _ServerProcess:
    """`python -m siamese_tfx.serving.cli serve` on 127.0.0.1 (a free port), logging to
    `log_path`."""

    def __init__(self, model_base: str, model_name: str, log_path: str) -> None:
        env = dict(os.environ)
        env.setdefault("TF_USE_LEGACY_KERAS", "1")
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "siamese_tfx.serving.cli", "serve", "--model-base", model_base,
             "--model-name", model_name, "--host", "127.0.0.1", "--port", "0",
             # Exactly the one version: no polling for others while the checks run.
             "--poll-interval", "3600", "--max-workers", "2", "--grace", "1"],
            stdout=subprocess.PIPE, stderr=self._log, env=env,
        )
        self._lines: "queue.Queue[str | None]" = queue.Queue()
        threading.Thread(target=self._read_stdout, daemon=True).start()

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            self._lines.put(raw.decode("utf-8", "replace").rstrip("\n"))
        self._lines.put(None)

    def wait_for_address(self, timeout_s: float) -> str:
        """The address the server announces once it has loaded what it could.

        Raises:
            RuntimeError: the process exited, or did not announce itself in time.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RuntimeError(f"the model server did not start within {timeout_s:.0f} s")
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                code = self.process.wait()
                raise RuntimeError(f"the model server exited with code {code} before serving")
            match = _ANNOUNCEMENT.match(line)
            if match:
                return match.group(1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()

    def log_tail(self) -> list[str]:
        if not self._log.closed:
            self._log.flush()
        with open(self.log_path, errors="replace") as f:
            return [line.rstrip("\n") for line in f.readlines()[-_LOG_TAIL_LINES:]]


def _version_status(channel: grpc.Channel, model_name: str, timeout_s: float):
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = model_name
    request.model_spec.version.value = VERSION
    response = stub.GetModelStatus(request, timeout=timeout_s)
    return response.model_version_status[0]


def compare_outputs(served: dict[str, np.ndarray], local: dict[str, np.ndarray],
                    tolerance: float) -> tuple[str, float]:
    """("", largest difference) when `served` equals `local`; else (what differs, ...)."""
    if set(served) != set(local):
        return (f"outputs {sorted(served)} through the server, {sorted(local)} in-process",
                float("inf"))
    largest = 0.0
    for name in sorted(local):
        a, b = served[name], local[name]
        if a.shape != b.shape or a.dtype != b.dtype:
            return (f"output {name!r} is {a.dtype}{list(a.shape)} through the server, "
                    f"{b.dtype}{list(b.shape)} in-process", float("inf"))
        if a.dtype.kind == "f":
            if not np.isfinite(a).all():
                return f"output {name!r} is not finite: {a.ravel()[:4].tolist()}", float("inf")
            difference = float(np.max(np.abs(a.astype(np.float64) - b))) if a.size else 0.0
            largest = max(largest, difference)
            if not np.allclose(a, b, rtol=tolerance, atol=tolerance):
                return (f"output {name!r} differs from the in-process answer by up to "
                        f"{difference:.3g} (tolerance {tolerance:g})", largest)
        elif not np.array_equal(a, b):
            return f"output {name!r} differs from the in-process answer", largest
    return "", largest


def _in_process(loaded: Any, request: predict_pb2.PredictRequest) -> dict[str, np.ndarray]:
    signature = loaded.signatures[request.model_spec.signature_name or signatures.SERVING_DEFAULT]
    inputs = {name: tf.constant(tf.make_ndarray(proto)) for name, proto in request.inputs.items()}
    return {name: value.numpy() for name, value in signature(**inputs).items()}


def _check(stub: prediction_service_pb2_grpc.PredictionServiceStub, loaded: Any, source: str,
           request: predict_pb2.PredictRequest, model_name: str, timeout_s: float,
           tolerance: float) -> RequestCheck:
    request = predict_pb2.PredictRequest.FromString(request.SerializeToString())
    request.model_spec.name = model_name
    request.model_spec.version.value = VERSION
    signature = request.model_spec.signature_name or signatures.SERVING_DEFAULT
    started = time.monotonic()
    try:
        response = stub.Predict(request, timeout=timeout_s)
    except grpc.RpcError as e:
        return RequestCheck(source, signature, False,
                            f"the server answered {e.code().name}: {e.details()}")
    seconds = time.monotonic() - started
    served = {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}
    try:
        local = _in_process(loaded, request)
    except Exception as e:  # the same request must also run in-process
        return RequestCheck(source, signature, False,
                            f"fails in-process: {type(e).__name__}: {str(e).splitlines()[0]}")
    problem, largest = compare_outputs(served, local, tolerance)
    return RequestCheck(source, signature, not problem, problem, largest, round(seconds, 4))


def validate(
    model_path: str,
    model_name: str,
    requests: Sequence[tuple[str, predict_pb2.PredictRequest]],
    *,
    work_dir: str | None = None,
    load_timeout_s: float = 180.0,
    request_timeout_s: float = 60.0,
    tolerance: float = 1e-5,
) -> InfraReport:
    """Serves `model_path` from a separate server process and checks `requests` against it.

    Args:
        model_path: The candidate SavedModel (local path or any URI tf.io.gfile reads).
        model_name: The name to serve it under.
        requests: (where it came from, PredictRequest) pairs; their model name and version are
            replaced with the candidate's.
        work_dir: Scratch folder for the model copy and the server's log (default: a temp dir,
            removed afterwards).
        load_timeout_s: How long the server may take to start and load (and warm up) the model.
        request_timeout_s: Deadline of each request.
        tolerance: Largest absolute (and relative) difference allowed between the served and
            the in-process float outputs.
    """
    from tfx.utils import io_utils

    if not requests:
        return InfraReport(False, "there is no request to validate the model with", model_path)
    try:
        loaded = tf.saved_model.load(model_path)
    except Exception as e:
        return InfraReport(False, f"the model does not load in-process: {type(e).__name__}: "
                           f"{str(e).splitlines()[0] if str(e) else ''}", model_path)
    scratch = work_dir or tempfile.mkdtemp(prefix="infra-validation-")
    model_base = os.path.join(scratch, "model_base")
    shutil.rmtree(model_base, ignore_errors=True)
    io_utils.copy_dir(model_path, os.path.join(model_base, model_name, str(VERSION)))
    report = InfraReport(False, "", model_path)
    started = time.monotonic()
    server = _ServerProcess(model_base, model_name, os.path.join(scratch, "server.log"))
    try:
        address = server.wait_for_address(load_timeout_s)
        with grpc.insecure_channel(address) as channel:
            status = _version_status(channel, model_name, request_timeout_s)
            report.server_seconds = round(time.monotonic() - started, 2)
            state = get_model_status_pb2.ModelVersionStatus.State.Name(status.state)
            if state != "AVAILABLE":
                report.reason = (
                    f"the serving stack could not load the model (version state {state}, "
                    f"{_code_name(status.status.error_code)}): "
                    f"{status.status.error_message}")
                return report
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            for source, request in requests:
                report.checks.append(_check(stub, loaded, source, request, model_name,
                                            request_timeout_s, tolerance))
        failed = [c for c in report.checks if not c.ok]
        report.blessed = not failed
        if failed:
            shown = "; ".join(f"{c.source} ({c.signature}): {c.problem}" for c in failed[:3])
            more = f"; and {len(failed) - 3} more" if len(failed) > 3 else ""
            report.reason = (f"{len(failed)} of {len(report.checks)} requests failed through "
                             f"the serving stack: {shown}{more}")
        return report
    except (RuntimeError, grpc.RpcError) as e:
        detail = (f"{e.code().name}: {e.details()}" if isinstance(e, grpc.RpcError) else str(e))
        report.reason = detail
        return report
    finally:
        server.stop()
        report.server_log_tail = server.log_tail()
        if not report.blessed:
            logger.error("Infra validation failed: %s\nServer log (last lines):\n%s",
                         report.reason, "\n".join(report.server_log_tail))
        if work_dir is None:
            shutil.rmtree(scratch, ignore_errors=True)


def _code_name(value: int) -> str:
    """The name of a numeric gRPC status code (TF Serving's error_code)."""
    names = {code.value[0]: code.name for code in grpc.StatusCode}
    return names.get(value, f"code {value}")
