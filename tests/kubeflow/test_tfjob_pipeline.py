"""The pipeline on LocalDagRunner with its Trainer step run the way Kubeflow runs the compiled
step with trainer_workers = 2: the compiled launcher command, on the ExecutorInput KFP would give
it (kfp_local.py), creates the TFJob on the fake cluster (fake_kube.py, real HTTP), whose
operator runs the Chief and the Worker as two local processes of TFX's own executor entry point
(kubeflow_v2_run_executor with the Trainer's GenericExecutor) with TF_CONFIG. They train
together under MultiWorkerMirroredStrategy, the chief writes the one SavedModel, the Evaluator
and InfraValidator bless it and Pusher pushes it. Then a worker killed mid-training fails the
Trainer step with the job's failure message, and nothing is pushed."""

import json
import os
import signal
import sys
import threading
import time

import kfp_local
import pytest
from fake_kube import FakeCluster
from tfx.dsl.components.base import executor_spec

from siamese_tfx.components.contract.config import (DataConfig, EvalConfig, ImageConfig,
                                                    ModelConfig, TrainConfig)
from siamese_tfx.kubeflow import runner, tfjob
from siamese_tfx.kubeflow.config import KubeflowConfig
from siamese_tfx.pipeline import local_runner
from siamese_tfx.pipeline import pipeline as pipeline_lib
from siamese_tfx.pipeline.config import PipelineConfig

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

NAMESPACE = "team-a"
WORKFLOW = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "name": "siamese-tfjob-e2e",
            "uid": "5c0ffee0-0000-4000-8000-000000000e2e"}
LAUNCHER_POD = "siamese-tfjob-e2e-system-container-impl-42"
EXECUTOR_MODULE = "tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor"
KUBEFLOW = KubeflowConfig(image="local/siamese-tfx:test", trainer_workers=2,
                          trainer_gpu_count=0, trainer_cpu=1, trainer_memory_gb=4,
                          tfjob_restart_policy="Never", tfjob_backoff_limit=0,
                          tfjob_poll_seconds=0.5)


def _config(image_root: str, workdir, train_steps: int = 4) -> PipelineConfig:
    """tests/e2e's tiny Omniglot run (its global batch of 8 splits over the 2 workers)."""
    return PipelineConfig(
        pipeline_root=str(workdir / "root"), serving_dir=str(workdir / "serving"),
        pipeline_name="siamese-tfjob-e2e", model_name="omniglot",
        data=DataConfig(image_root=image_root, class_depth=2, num_train_pairs=48,
                        num_eval_pairs=24, eval_class_fraction=0.25, seed=1),
        image=ImageConfig(height=28, width=28, channels=1),
        model=ModelConfig(embedding_dim=16, margin=1.0),
        train=TrainConfig(train_steps=train_steps, batch_size=8, calibration_steps=2),
        eval=EvalConfig.record_only(),
    )


def _image_env() -> dict[str, str]:
    """The pipeline image's environment, on this machine: this Python first on PATH (the
    compiled commands say `python`), CPU only, one TensorFlow thread pool per process."""
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"],
               TF_USE_LEGACY_KERAS="1", CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2",
               TF_NUM_INTRAOP_THREADS="1", TF_NUM_INTEROP_THREADS="1", OMP_NUM_THREADS="1",
               PYTHONWARNINGS="ignore")
    for name in ("TF_CONFIG", "KUBERNETES_SERVICE_HOST", "KFP_POD_NAME", "KFP_POD_UID"):
        env.pop(name, None)
    return env


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("tfjob_pipeline")


@pytest.fixture(scope="module")
def cluster(workdir):
    os.makedirs(workdir / "cluster")
    with FakeCluster(str(workdir / "cluster"), env=_image_env()) as fake:
        fake.add_pod(NAMESPACE, LAUNCHER_POD, uid="launcher-pod-uid",
                     ownerReferences=[{**WORKFLOW, "controller": True}],
                     labels={tfjob.RUN_ID_LABEL: "e2e-run"}, service_account="pipeline-runner")
        yield fake


@pytest.fixture(scope="module")
def step(omniglot_tiny, workdir, cluster):
    """The compiled Trainer step (the launcher), set up for kfp_local in the 'pod' env."""
    spec = runner.compile_spec(_config(omniglot_tiny, workdir), KUBEFLOW)
    task = spec["root"]["dag"]["tasks"][pipeline_lib.TRAINER]
    component = spec["components"][task["componentRef"]["name"]]
    container = spec["deploymentSpec"]["executors"][component["executorLabel"]]["container"]
    assert container["command"][:3] == list(runner.LAUNCHER_COMMAND)
    env = dict(_image_env(), KUBECONFIG=cluster.write_kubeconfig(
        str(workdir / "kubeconfig"), NAMESPACE), KFP_POD_NAME=LAUNCHER_POD,
        KFP_POD_UID="launcher-pod-uid")
    kfp_local.STEP.update(container=container, component=component, env=env,
                          workdir=str(workdir / "pods"))
    os.makedirs(workdir / "pods", exist_ok=True)
    return kfp_local.STEP


def _run(config: PipelineConfig, workdir):
    """local_runner.run with the Trainer's executor replaced by the compiled step."""
    create = local_runner.create_pipeline

    def with_trainer_as_kfp_step(*args, **kwargs):
        pipeline = create(*args, **kwargs)
        [trainer] = [c for c in pipeline.components if c.id == pipeline_lib.TRAINER]
        trainer.executor_spec = executor_spec.ExecutorClassSpec(kfp_local.KfpContainerExecutor)
        return pipeline

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(local_runner, "create_pipeline", with_trainer_as_kfp_step)
        return local_runner.run(config, str(workdir / "metadata.sqlite"), progress=None,
                                log_path=str(workdir / "tfx.log"))


@pytest.fixture(scope="module")
def first_run(step, omniglot_tiny, workdir):
    started = time.monotonic()
    summary = _run(_config(omniglot_tiny, workdir), workdir)
    return summary, time.monotonic() - started


def _saved_models(root) -> list[str]:
    return sorted(d for d, _, files in os.walk(root) if "saved_model.pb" in files)


def test_trainer_trains_on_two_processes_and_the_chiefs_model_is_blessed_and_pushed(
        first_run, cluster, workdir):
    summary, seconds = first_run
    states = {c.component: c.state for c in summary.components}
    assert all(s == "COMPLETE" for s in states.values()), states
    assert summary.blessed is True and summary.infra_blessed is True
    assert summary.pushed_path and os.path.exists(
        os.path.join(summary.pushed_path, "saved_model.pb"))

    [job] = cluster.created
    assert job["metadata"]["ownerReferences"] == [WORKFLOW]
    specs = job["spec"]["tfReplicaSpecs"]
    assert {k: v["replicas"] for k, v in specs.items()} == {"Chief": 1, "Worker": 1}
    for spec in specs.values():
        [container] = spec["template"]["spec"]["containers"]
        assert container["command"] == ["python", "-m", EXECUTOR_MODULE]
        assert container["args"][:2] == ["--executor_class_path",
                                         "tfx.components.trainer.executor.GenericExecutor"]
    # Two processes trained together: one MultiWorkerMirrored cluster of 2 replicas.
    fake_job = cluster.only_job()
    logs = {r.name: open(r.runs[0].log_path).read() for r in fake_job.replicas}
    assert len(logs) == 2 and all(len(r.runs) == 1 for r in fake_job.replicas)
    for name, log in logs.items():
        assert "Training with CollectiveAllReduceStrategy, 2 replica(s), global batch 8" in log, \
            name + "\n" + log[-3000:]
    chief = next(r for r in fake_job.replicas if r.kind == "Chief")
    assert chief.current.poll() == 0

    # The one SavedModel is the chief's, in the Trainer's model artifact; the pushed copy is it.
    [model_uri] = [u for u in summary.artifacts[pipeline_lib.TRAINER]
                   if os.path.basename(os.path.dirname(u)) == "model"]
    assert _saved_models(workdir / "root" / pipeline_lib.TRAINER) == [
        os.path.join(model_uri, "Format-Serving")]
    with open(os.path.join(summary.pushed_path, "saved_model.pb"), "rb") as pushed, \
            open(os.path.join(model_uri, "Format-Serving", "saved_model.pb"), "rb") as trained:
        assert pushed.read() == trained.read()

    # The step's log has the chief's; its output file is the chief's ExecutorOutput.
    [run] = kfp_local.RUNS
    assert run["exit_code"] == 0
    name = job["metadata"]["name"]
    assert f"[{name}-chief-0]" in run["log"] and "Training with" in run["log"]
    with open(run["output_file"]) as f:
        output = json.load(f)
    assert output["artifacts"]["model"]["artifacts"][0]["uri"] == model_uri
    # The launcher pod's 1 GB is plenty.
    assert 0 < run["max_rss_kb"] * 1024 < KUBEFLOW.launcher_memory_gb * 1e9
    print(f"pipeline with a 2-worker TFJob Trainer: {seconds:.0f}s; Trainer step "
          f"{dict((c.component, c.seconds) for c in summary.components)[pipeline_lib.TRAINER]:.0f}s"
          f"; launcher peak RSS {run['max_rss_kb'] / 1024:.0f} MB")


def _kill_when_training(cluster: FakeCluster, done: threading.Event, killed: list) -> None:
    """Kills worker-0 of the next job (SIGKILL, as an OOM kill or a lost node does) once it
    has started training."""
    deadline = time.monotonic() + 900
    while not done.is_set() and time.monotonic() < deadline:
        for job in list(cluster.jobs.values()):
            if len(cluster.created) < 2 or job.uid != cluster.created[-1]["metadata"]["uid"]:
                continue
            worker = next(r for r in job.replicas if r.kind == "Worker")
            if worker.runs and "Training with" in open(worker.runs[-1].log_path).read():
                cluster.kill(worker, signal.SIGKILL)
                killed.append(worker.name)
                return
        time.sleep(0.2)


def test_worker_killed_mid_training_fails_the_step_and_nothing_is_pushed(
        first_run, cluster, omniglot_tiny, workdir):
    summary, _ = first_run
    serving = workdir / "serving" / "omniglot"
    before = sorted(os.listdir(serving))
    done, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_when_training, args=(cluster, done, killed))
    killer.start()
    # Another train_steps: the Trainer runs again (its inputs are cached).
    config = _config(omniglot_tiny, workdir, train_steps=3)
    try:
        with pytest.raises(Exception) as failure:
            _run(config, workdir)
    finally:
        done.set()
        killer.join()
    assert killed, "the worker never started training"
    message = str(failure.value)
    name = cluster.created[-1]["metadata"]["name"]
    assert f"TFJob {NAMESPACE}/{name} failed (TFJobFailed): TFJob {NAMESPACE}/{name} has " \
           "failed because 1 Worker replica(s) failed." in message, message
    assert f"{killed[0]}: exit code 137" in message
    assert sorted(os.listdir(serving)) == before  # Nothing pushed.
    latest = local_runner.summary_lib.summarize(
        local_runner.metadata_config(str(workdir / "metadata.sqlite")), config.pipeline_name)
    states = {c.component: c.state for c in latest.components}
    assert latest.run_id != summary.run_id
    assert states[pipeline_lib.TRAINER] == "FAILED", states
    assert pipeline_lib.PUSHER not in states
    # cleanPodPolicy Running: the operator stopped the chief, which was waiting for its peer.
    job = cluster.job(NAMESPACE, name)
    deadline = time.monotonic() + 30
    while any(r.current.poll() is None for r in job.replicas) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert all(r.current.poll() is not None for r in job.replicas)
