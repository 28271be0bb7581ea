"""The pipeline's Beam components (PairExampleGen, StatisticsGen, Transform, Evaluator) on Beam's
portable runner, the way Flink and Spark run them: submitted to a job service, executed by the
SDK workers of an EXTERNAL worker pool, both separate processes on 127.0.0.1 started here (Beam's
own Python job service and worker pool). Each result must equal DirectRunner's on the same data
and seed."""

import dataclasses
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from types import SimpleNamespace

import grpc
import pytest
import tensorflow as tf
import tensorflow_data_validation as tfdv

import siamese_tfx.pipeline
from siamese_tfx.components.contract.config import (DataConfig, EvalConfig, ImageConfig,
                                                    ModelConfig, TrainConfig)
from siamese_tfx.components.pair_example_gen import executor as example_gen
from siamese_tfx.pipeline import cli, local_runner
from siamese_tfx.pipeline import pipeline as pipeline_lib
from siamese_tfx.pipeline.config import LocalBeamConfig, PipelineConfig

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

BEAM_COMPONENTS = (pipeline_lib.EXAMPLE_GEN, pipeline_lib.STATISTICS_GEN, pipeline_lib.TRANSFORM,
                   pipeline_lib.EVALUATOR)
# Where Beam's job service and worker pool say what they did (their own log lines).
JOB_STARTED, JOB_DONE, WORKER_STARTED = "Running job", "with state DONE", "Starting worker"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker_env() -> dict:
    """This virtualenv's bin/ first on PATH (the pool starts each worker as `python`) and the
    code under test importable by the workers."""
    package_parent = os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(siamese_tfx.pipeline.__file__))))
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (package_parent, env.get("PYTHONPATH", "")) if p)
    return env


class _Service:
    """A Beam service process (own process group, so its workers stop with it) and its log."""

    def __init__(self, args, log_path):
        self.log_path = log_path
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen([sys.executable, "-m", *args], stdout=log,
                                            stderr=subprocess.STDOUT, env=_worker_env(),
                                            start_new_session=True)

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def _wait_for_port(port: int, service: _Service, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert service.process.poll() is None, f"service exited:\n{service.log()[-3000:]}"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise AssertionError(f"nothing listens on port {port} after {timeout_s} s:\n"
                         f"{service.log()[-3000:]}")


@pytest.fixture(scope="module")
def job_service(tmp_path_factory, request):
    """Beam's Python portable job service on 127.0.0.1 (stopped by the test)."""
    port = _free_port()
    service = _Service(["apache_beam.runners.portability.local_job_service_main",
                        "--port", str(port)],
                       str(tmp_path_factory.mktemp("beam") / "job_service.log"))
    request.addfinalizer(service.stop)
    _wait_for_port(port, service)
    grpc.channel_ready_future(grpc.insecure_channel(f"localhost:{port}")).result(timeout=30)
    service.endpoint = f"localhost:{port}"
    return service


@pytest.fixture(scope="module")
def worker_pool(tmp_path_factory, request):
    """Beam's worker pool (the EXTERNAL environment) on 127.0.0.1 (stopped by the test)."""
    port = _free_port()
    service = _Service(["apache_beam.runners.worker.worker_pool_main",
                        "--service_port", str(port)],
                       str(tmp_path_factory.mktemp("beam") / "worker_pool.log"))
    request.addfinalizer(service.stop)
    _wait_for_port(port, service)
    service.address = f"localhost:{port}"
    return service


@pytest.fixture(scope="module")
def images(omniglot_tiny, tmp_path_factory) -> str:
    """The tiny Omniglot set with one file that is not an image, so both runs quarantine it."""
    root = str(tmp_path_factory.mktemp("portable_data") / "omniglot")
    shutil.copytree(omniglot_tiny, root)
    alphabet = sorted(os.listdir(root))[0]
    character = sorted(os.listdir(os.path.join(root, alphabet)))[0]
    with open(os.path.join(root, alphabet, character, "notes.png"), "w") as f:
        f.write("These are notes, not an image.\n")
    return root


def _config(images: str, workdir) -> PipelineConfig:
    return PipelineConfig(
        pipeline_root=str(workdir / "root"),
        serving_dir=str(workdir / "serving"),
        pipeline_name="siamese-beam",
        model_name="omniglot",
        data=DataConfig(image_root=images, class_depth=2, num_train_pairs=48, num_eval_pairs=24,
                        eval_class_fraction=0.25, seed=1, max_quarantined=1),
        image=ImageConfig(height=28, width=28, channels=1),
        model=ModelConfig(embedding_dim=16, margin=1.0),
        train=TrainConfig(train_steps=4, batch_size=8, calibration_steps=2),
        eval=EvalConfig.record_only(),
    )


def _portable(job_service, environment_config: str) -> LocalBeamConfig:
    # The arguments the Kubeflow compile writes for Flink and Spark: an EXTERNAL worker pool.
    return LocalBeamConfig(beam_runner="PortableRunner", beam_job_endpoint=job_service.endpoint,
                           beam_environment_type="EXTERNAL",
                           beam_environment_config=environment_config)


def _run(config: PipelineConfig, workdir, beam: LocalBeamConfig):
    return local_runner.run(config, str(workdir / "metadata.sqlite"),
                            beam_pipeline_args=local_runner.beam_pipeline_args(beam),
                            progress=None, log_path=str(workdir / "tfx.log"))


class _Summary:
    """The run summary the CLI wrote (`--summary-json`), with RunSummary's attributes."""

    def __init__(self, path: str):
        with open(path) as f:
            self.__dict__.update(json.load(f))
        self.components = [SimpleNamespace(**c) for c in self.components]


@pytest.fixture(scope="module")
def runs(images, tmp_path_factory, job_service, worker_pool):
    """The same pipeline and data twice, at the same time (2 cores): `siamese-tfx run` on the
    portable runner, as a user runs it (a relative --image-root: workers run elsewhere), and
    DirectRunner in this process. Returns (direct summary, portable summary, jobs the job
    service ran for the portable run)."""
    portable_dir = tmp_path_factory.mktemp("portable")
    config = dataclasses.replace(_config(os.path.basename(images), portable_dir),
                                 pipeline_root="", serving_dir="")
    config_file = portable_dir / "config.json"
    config_file.write_text(config.to_json())
    jobs_before = job_service.log().count(JOB_STARTED)
    with open(portable_dir / "cli.log", "wb") as log:
        cli_run = subprocess.Popen(
            [sys.executable, "-m", "siamese_tfx.pipeline.cli", "run", "--config",
             str(config_file), "--output-dir", str(portable_dir), "--summary-json",
             str(portable_dir / "summary.json"), "--beam-runner", "PortableRunner",
             "--beam-job-endpoint", job_service.endpoint, "--beam-environment-type",
             "EXTERNAL", "--beam-environment-config", worker_pool.address],
            cwd=os.path.dirname(images), env=_worker_env(), stdout=log,
            stderr=subprocess.STDOUT)
    try:
        direct_dir = tmp_path_factory.mktemp("direct")
        direct = _run(_config(images, direct_dir), direct_dir, LocalBeamConfig())
        code = cli_run.wait(timeout=900)
    finally:
        if cli_run.poll() is None:
            cli_run.kill()
            cli_run.wait()
    output = (portable_dir / "cli.log").read_text(errors="replace")
    assert code == 0, output[-5000:]
    portable = _Summary(str(portable_dir / "summary.json"))
    return direct, portable, job_service.log().count(JOB_STARTED) - jobs_before


@pytest.fixture(scope="module")
def direct_run(runs):
    return runs[0]


@pytest.fixture(scope="module")
def portable_run(runs):
    return runs[1:]


def _output(summary, component: str, key: str) -> str:
    (uri,) = [u for u in summary.artifacts[component]
              if os.path.basename(os.path.dirname(u)) == key]
    return uri


def _records(summary, component: str, key: str) -> dict[str, list]:
    """Every split's tf.Examples as sorted (feature, values) tuples: runners may write the
    examples, and protobuf the features of each, in any order."""
    folder = _output(summary, component, key)
    splits = {}
    for split in sorted(glob.glob(os.path.join(folder, "Split-*"))):
        files = sorted(glob.glob(os.path.join(split, "*")))
        examples = []
        for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
            example = tf.train.Example.FromString(record.numpy())
            examples.append(tuple(sorted(
                (name, tuple(getattr(feature, feature.WhichOneof("kind")).value))
                for name, feature in example.features.feature.items())))
        splits[os.path.basename(split)] = sorted(examples)
    return splits


def test_every_beam_component_ran_as_jobs_of_the_job_service_on_the_pool(portable_run,
                                                                          job_service,
                                                                          worker_pool):
    summary, jobs = portable_run
    states = {c.component: c.state for c in summary.components}
    assert all(states[c] == "COMPLETE" for c in BEAM_COMPONENTS), states
    assert summary.pushed_path, summary.not_pushed_reason
    # Not run in-process: the job service ran a job per Beam component (Transform's analysis
    # and transform included), each to DONE, with workers the pool started.
    assert jobs >= len(BEAM_COMPONENTS), job_service.log()[-3000:]
    assert job_service.log().count(JOB_DONE) >= jobs
    assert worker_pool.log().count(WORKER_STARTED) >= jobs


def test_examples_and_quarantine_report_equal_direct_runner(direct_run, portable_run):
    portable, _ = portable_run
    direct_examples = _records(direct_run, pipeline_lib.EXAMPLE_GEN, example_gen.EXAMPLES_KEY)
    assert {s: len(r) for s, r in direct_examples.items()} == {"Split-eval": 24,
                                                               "Split-train": 48}
    assert _records(portable, pipeline_lib.EXAMPLE_GEN, example_gen.EXAMPLES_KEY) == \
        direct_examples
    assert portable.quarantined == direct_run.quarantined == 1
    reports = []
    for summary in (direct_run, portable):
        folder = _output(summary, pipeline_lib.EXAMPLE_GEN, example_gen.QUARANTINE_KEY)
        with open(os.path.join(folder, example_gen.REPORT_CSV)) as f:
            rows = sorted(f.read().splitlines())
        with open(os.path.join(folder, example_gen.SUMMARY_JSON)) as f:
            reports.append((rows, json.load(f)))
    assert reports[0] == reports[1]
    assert any("notes.png" in row for row in reports[0][0])


def _statistics_counts(summary) -> dict:
    folder = _output(summary, pipeline_lib.STATISTICS_GEN, "statistics")
    counts = {}
    for path in sorted(glob.glob(os.path.join(folder, "Split-*", "FeatureStats.pb"))):
        (dataset,) = tfdv.load_stats_binary(path).datasets
        split = os.path.basename(os.path.dirname(path))
        counts[split] = dataset.num_examples
        for feature in dataset.features:
            common = (feature.num_stats.common_stats if feature.HasField("num_stats")
                      else feature.string_stats.common_stats)
            counts[(split, feature.path.step[0])] = (
                common.num_non_missing, common.num_missing, common.min_num_values,
                common.max_num_values, common.tot_num_values)
    return counts


def test_statistics_counts_equal_direct_runner(direct_run, portable_run):
    direct = _statistics_counts(direct_run)
    assert direct["Split-train"] == 48 and direct["Split-eval"] == 24
    assert _statistics_counts(portable_run[0]) == direct


def test_transformed_examples_equal_direct_runner(direct_run, portable_run):
    direct = _records(direct_run, pipeline_lib.TRANSFORM, "transformed_examples")
    assert {s: len(r) for s, r in direct.items()} == {"Split-eval": 24, "Split-train": 48}
    assert _records(portable_run[0], pipeline_lib.TRANSFORM, "transformed_examples") == direct


def test_evaluator_metrics_equal_direct_runner(direct_run, portable_run):
    portable, _ = portable_run
    assert direct_run.metrics["example_count"] == 24
    assert {"binary_accuracy", "auc"} <= set(direct_run.metrics)
    assert portable.metrics == pytest.approx(direct_run.metrics, abs=1e-6)
    assert portable.blessed == direct_run.blessed


def test_without_the_worker_pool_the_run_fails(images, tmp_path, job_service):
    """No silent fallback to in-process execution: with nothing at the worker pool address the
    job service's job fails, and so does the run."""
    workdir = tmp_path / "no_pool"
    seen_before = len(job_service.log())
    nowhere = f"localhost:{_free_port()}"
    with pytest.raises(Exception):
        _run(_config(images, workdir), workdir, _portable(job_service, nowhere))
    seen = job_service.log()[seen_before:]
    assert JOB_STARTED in seen and f"Requesting worker at {nowhere}" in seen, seen[-3000:]
    assert "Error running pipeline" in seen and JOB_DONE not in seen


def test_run_refuses_an_unreachable_job_service_at_once(images, tmp_path, capfd):
    code = cli.main(["run", "--output-dir", str(tmp_path), "--image-root", images,
                     "--class-depth", "2", "--beam-runner", "PortableRunner",
                     "--beam-job-endpoint", f"localhost:{_free_port()}"])
    assert code == 2
    error = capfd.readouterr().err  # the terminal's stderr (the CLI sends the rest to its log)
    assert "no Beam job service answers at localhost:" in error and "--beam-job-endpoint" in error
    assert not os.path.exists(tmp_path / "metadata.sqlite")
