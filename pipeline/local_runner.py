"""Runs the pipeline on this machine: LocalDagRunner, SQLite ML Metadata, and Beam's DirectRunner
in this process or a portable runner (a job service and its workers) from `LocalBeamConfig`."""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Optional, Sequence, TextIO

from tfx import v1 as tfx

from siamese_tfx.components.contract import errors
from siamese_tfx.pipeline import console
from siamese_tfx.pipeline import summary as summary_lib
from siamese_tfx.pipeline.config import LocalBeamConfig, PipelineConfig
from siamese_tfx.pipeline.pipeline import COMPONENT_ORDER, component_ids, create_pipeline

DEFAULT_BEAM_ARGS = ("--direct_running_mode=in_memory", "--direct_num_workers=1")
JOB_SERVICE_TIMEOUT_S = 10.0


class BeamEndpointError(errors.UsageError):
    """The configured Beam job service does not answer."""


def beam_pipeline_args(beam: LocalBeamConfig) -> list[str]:
    """The Beam arguments of every Beam component for `beam`: DirectRunner in this process
    (one in-memory worker unless the extra arguments say otherwise), or a portable runner
    submitting to its job service with the configured SDK harness environment."""
    if not beam.is_portable:
        return list(DEFAULT_BEAM_ARGS) + list(beam.beam_extra_args)
    args = [f"--runner={beam.beam_runner}"]
    if beam.beam_job_endpoint:
        args.append(f"--job_endpoint={beam.beam_job_endpoint}")
    return args + beam.environment_args() + list(beam.beam_extra_args)


def check_job_endpoint(beam: LocalBeamConfig, timeout_s: float = JOB_SERVICE_TIMEOUT_S) -> None:
    """Raises BeamEndpointError unless the job service of `beam` answers within `timeout_s`
    (Beam itself would wait 60 s per component and then fail with a bare FutureTimeoutError)."""
    if not (beam.is_portable and beam.beam_job_endpoint):
        return
    import grpc

    channel = grpc.insecure_channel(beam.beam_job_endpoint)
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout_s)
    except grpc.FutureTimeoutError:
        raise BeamEndpointError(
            f"no Beam job service answers at {beam.beam_job_endpoint} (--beam-job-endpoint) "
            f"within {timeout_s:g} s: start it (e.g. python -m "
            "apache_beam.runners.portability.local_job_service_main --port PORT) or fix the "
            "address") from None
    finally:
        channel.close()


class _Progress(logging.Handler):
    """Prints LocalDagRunner's 'Component X is running/finished' lines as progress, and the
    project's own INFO+ records (the components' progress and findings) under them; other
    libraries' records go only to the log file."""

    def __init__(self, stream: TextIO, components: Sequence[str] = COMPONENT_ORDER):
        super().__init__(logging.INFO)
        self._stream = stream
        self._components = tuple(components)  # the run's, in pipeline order
        self._started: dict[str, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if console.is_own(record):
            level = "" if record.levelno <= logging.INFO else f"{record.levelname}: "
            print(f"    {level}{message}", file=self._stream, flush=True)
            return
        for verb in ("running", "finished"):
            suffix = f" is {verb}."
            if message.startswith("Component ") and message.endswith(suffix):
                node = message[len("Component "):-len(suffix)]
                step = (self._components.index(node) + 1) if node in self._components else "?"
                prefix = f"[{step}/{len(self._components)}] {node}"
                if verb == "running":
                    self._started[node] = time.monotonic()
                    print(f"{prefix} ...", file=self._stream, flush=True)
                else:
                    took = time.monotonic() - self._started.get(node, time.monotonic())
                    print(f"{prefix} done in {took:.1f}s", file=self._stream, flush=True)


def metadata_config(metadata_path: str):
    return tfx.orchestration.metadata.sqlite_metadata_connection_config(metadata_path)


def run(
    config: PipelineConfig,
    metadata_path: str,
    beam_pipeline_args: Sequence[str] = DEFAULT_BEAM_ARGS,
    progress: Optional[TextIO] | str = "stdout",
    log_path: Optional[str] = None,
) -> summary_lib.RunSummary:
    """Runs the whole pipeline and returns its summary.

    With `progress`, prints a line as each component starts and ends; with `log_path`, TFX's
    own (verbose) log goes to that file instead of the console. A failed component raises after
    the summary of what did run has been printed to `progress`.
    """
    if progress == "stdout":  # the stdout of the call, not of the import
        progress = sys.stdout
    os.makedirs(os.path.dirname(os.path.abspath(metadata_path)), exist_ok=True)
    connection = metadata_config(metadata_path)
    pipeline = create_pipeline(config, connection, beam_pipeline_args)
    absl_logger = logging.getLogger("absl")
    handlers: list[logging.Handler] = []
    if progress:
        handlers.append(_Progress(progress, component_ids(config)))
    if log_path:
        os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
        file_handler = logging.FileHandler(log_path)
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        handlers.append(file_handler)
    previous = (absl_logger.level, absl_logger.propagate)
    for handler in handlers:
        absl_logger.addHandler(handler)
    if handlers:
        absl_logger.setLevel(logging.INFO)
        # Libraries parse absl flags mid-run, which resets the absl logger to WARNING and would
        # silence the progress lines; hold the level for the run.
        absl_logger.setLevel = lambda level: None  # type: ignore[method-assign]
    if log_path:
        absl_logger.propagate = False
    try:
        tfx.orchestration.LocalDagRunner().run(pipeline)
    except BaseException:
        if progress:
            try:
                print(summary_lib.summarize(connection, config.pipeline_name).format(),
                      file=progress)
            except LookupError:
                pass
        raise
    finally:
        for handler in handlers:
            absl_logger.removeHandler(handler)
            handler.close()
        if "setLevel" in vars(absl_logger):
            del absl_logger.setLevel
        absl_logger.setLevel(previous[0])
        absl_logger.propagate = previous[1]
    return summary_lib.summarize(connection, config.pipeline_name)
