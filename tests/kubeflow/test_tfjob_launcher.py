"""The TFJob launcher as a process, against the fake cluster (real HTTP on 127.0.0.1): success,
a failing worker, a launcher killed and restarted mid-job, SIGTERM, the active deadline, a
retried step, and the Role it needs. The replicas run tests/kubeflow/replica_stub.py (these tests
are about the launcher; test_tfjob_pipeline.py trains for real)."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from fake_kube import FakeCluster, role_rules

from siamese_tfx.kubeflow import launcher, tfjob
from siamese_tfx.kubeflow.tfjob import LauncherConfig

HERE = os.path.dirname(os.path.abspath(__file__))
NAMESPACE = "team-a"
WORKFLOW = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "name": "siamese-x7k2p",
            "uid": "4f1b6c2e-0000-4000-8000-00000000a001"}
LAUNCHER_POD = "siamese-x7k2p-system-container-impl-1234"
TIMEOUT = 60


class Step:
    """One Trainer step: its ExecutorInput and the launcher process that runs it."""

    def __init__(self, cluster: FakeCluster, tmp_path, mode: str, **settings):
        self.cluster, self.dir, self.mode = cluster, tmp_path, mode
        root = tmp_path / "root" / "Trainer"
        self.executor_input = {
            "inputs": {"parameterValues": {"run_fn": "siamese_tfx.components.trainer.train."
                                                     "run_fn"}},
            "outputs": {"artifacts": {
                "model": {"artifacts": [{"uri": str(root / "model"),
                                         "type": {"schemaTitle": "tfx.Model"}}]},
                "model_run": {"artifacts": [{"uri": str(root / "model_run"),
                                             "type": {"schemaTitle": "tfx.ModelRun"}}]}},
                "outputFile": str(tmp_path / "pod" / "executor_output.json")}}
        settings = {"workers": 2, "restart_policy": "Never", "backoff_limit": 0,
                    "poll_seconds": 0.1, **settings}
        self.config = LauncherConfig(
            component="Trainer", image="pipeline:test",
            command=(sys.executable, os.path.join(HERE, "replica_stub.py")), cpu=1.0,
            memory_gb=1.0, **settings)
        self.release = tmp_path / "release"
        self.kubeconfig = cluster.write_kubeconfig(str(tmp_path / "kubeconfig"), NAMESPACE)
        self.attempts: list[subprocess.Popen] = []

    @property
    def output_file(self) -> str:
        return self.executor_input["outputs"]["outputFile"]

    def args(self) -> list[str]:
        return ["--executor_class_path", "tfx.components.trainer.executor.GenericExecutor",
                launcher.INVOCATION_FLAG, json.dumps(self.executor_input),
                "--stub-mode", self.mode, "--stub-dir", str(self.dir),
                "--stub-release", str(self.release)]

    def start(self) -> subprocess.Popen:
        env = dict(os.environ, KUBECONFIG=self.kubeconfig, KFP_POD_NAME=LAUNCHER_POD,
                   KFP_POD_UID="0000-pod-uid", PYTHONUNBUFFERED="1")
        env.pop("KUBERNETES_SERVICE_HOST", None)
        log = open(self.dir / f"launcher-{len(self.attempts)}.log", "w")
        proc = subprocess.Popen(
            [sys.executable, "-m", "siamese_tfx.kubeflow.launcher", "--config",
             self.config.to_json(), "--", *self.args()],
            env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.attempts.append(proc)
        return proc

    def log(self, attempt: int = -1) -> str:
        return (self.dir / f"launcher-{attempt % len(self.attempts)}.log").read_text()

    def run(self) -> tuple[int, str]:
        code = self.start().wait(timeout=TIMEOUT)
        return code, self.log()

    def starts(self) -> list[dict]:
        path = self.dir / "starts.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() \
            else []

    def job_name(self) -> str:
        uris = launcher.output_uris(self.executor_input)
        return tfjob.job_name("Trainer", ",".join(uris.values()))

    def wait_for(self, condition, what: str) -> None:
        deadline = time.monotonic() + TIMEOUT
        while not condition():
            assert time.monotonic() < deadline, f"timed out waiting for {what}\n" + self.log()
            time.sleep(0.05)

    def stop(self) -> None:
        for proc in self.attempts:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture
def cluster(tmp_path):
    with FakeCluster(str(tmp_path), env=dict(os.environ, PYTHONUNBUFFERED="1")) as fake:
        fake.add_pod(NAMESPACE, LAUNCHER_POD, uid="0000-pod-uid",
                     labels={tfjob.RUN_ID_LABEL: "8d3c1f00-run"},
                     ownerReferences=[{**WORKFLOW, "controller": True,
                                       "blockOwnerDeletion": True}],
                     service_account="pipeline-runner")
        yield fake


@pytest.fixture
def step_factory(cluster, tmp_path):
    steps = []

    def make(mode: str, **settings) -> Step:
        step = Step(cluster, tmp_path, mode, **settings)
        steps.append(step)
        return step

    yield make
    for step in steps:
        step.stop()


def _no_forbidden(cluster):
    assert not [r for r in cluster.requests if r[2] == 403], cluster.requests


def test_job_of_chief_and_workers_succeeds_and_the_chief_output_becomes_the_steps(
        cluster, step_factory):
    step = step_factory("ok", workers=3)
    code, log = step.run()
    assert code == 0, log
    name = step.job_name()
    [job] = cluster.created
    assert job["metadata"]["name"] == name
    # Owned by what owns the launcher pod (the run's Workflow): deleting the run deletes it.
    assert job["metadata"]["ownerReferences"] == [WORKFLOW]
    assert job["metadata"]["labels"][tfjob.RUN_ID_LABEL] == "8d3c1f00-run"
    pod_spec = job["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]
    assert pod_spec["serviceAccountName"] == "pipeline-runner"  # The launcher pod's.
    # Every replica ran the step's command on the step's ExecutorInput, but for its output file.
    starts = {s["task"]: s for s in step.starts()}
    assert set(starts) == {"chief-0", "worker-0", "worker-1"}
    clusters = [s["tf_config"]["cluster"] for s in starts.values()]
    assert all(c == clusters[0] for c in clusters)
    assert {k: len(v) for k, v in clusters[0].items()} == {"chief": 1, "worker": 2}
    chief_output = str(step.dir / "root/Trainer/model_run/.tfjob/executor_output.json")
    assert starts["chief-0"]["output_file"] == chief_output
    assert starts["worker-0"]["output_file"] == launcher.WORKER_OUTPUT
    # The chief's ExecutorOutput is the step's; the chief's log is in the step's log.
    with open(step.output_file) as f:
        output = json.load(f)
    assert output["artifacts"]["model"]["artifacts"][0]["metadata"] == {"written_by": "chief-0"}
    assert f"[{name}-chief-0] chief-0: started in a cluster of 3" in log
    assert f"[{name}-chief-0] chief-0: done" in log
    assert f"[{name}-worker-0]" not in log  # Only the chief's log is streamed.
    assert "Succeeded" in log and "Running" in log
    _no_forbidden(cluster)


@pytest.mark.parametrize("restart, backoff, message, worker_starts", [
    ("Never", 0, "has failed because 1 Worker replica(s) failed.", 1),
    ("OnFailure", 1, "has failed because it has reached the specified backoff limit", 2),
])
def test_failing_worker_fails_the_step_with_the_jobs_message(
        cluster, step_factory, restart, backoff, message, worker_starts):
    step = step_factory("worker-fails", restart_policy=restart, backoff_limit=backoff)
    code, log = step.run()
    assert code == launcher.EXIT_FAILED, log
    name = step.job_name()
    assert f"error: TFJob {NAMESPACE}/{name} failed (TFJobFailed): " in log
    assert message in log
    # Which replica, how it ended, and its last log lines.
    assert f"{name}-worker-0: exit code 3" in log
    assert f"[{name}-worker-0] worker-0: RuntimeError: CUDA error: out of memory" in log
    assert [s["task"] for s in step.starts()].count("worker-0") == worker_starts
    # Nothing for KFP to record: the step's output file was never written.
    assert not os.path.exists(step.output_file)


def test_launcher_killed_mid_job_is_restarted_and_reattaches_to_the_same_job(
        cluster, step_factory):
    step = step_factory("wait")
    first = step.start()
    step.wait_for(lambda: len(step.starts()) == 2, "both replicas to start")
    step.wait_for(lambda: "Running" in step.log(0), "the first launcher to see the job run")
    first.kill()  # SIGKILL: no clean-up, the job keeps running.
    first.wait()
    job = cluster.only_job()
    assert not job.finished() and all(r.phase() == "Running" for r in job.replicas)

    second = step.start()
    step.wait_for(lambda: "re-attached" in step.log(1), "the second launcher to re-attach")
    step.release.touch()
    assert second.wait(timeout=TIMEOUT) == 0, step.log(1)
    assert len(cluster.created) == 1  # Still one job...
    posts = [r for r in cluster.requests if r[0] == "POST"]
    assert [r[2] for r in posts] == [201, 409]  # ...the second create found it.
    assert len(step.starts()) == 2  # No replica was started twice.
    assert os.path.exists(step.output_file)
    assert f"[{step.job_name()}-chief-0] chief-0: done" in step.log(1)


def test_sigterm_deletes_the_job_and_its_pods(cluster, step_factory):
    step = step_factory("wait")
    proc = step.start()
    step.wait_for(lambda: len(step.starts()) == 2, "both replicas to start")
    step.wait_for(lambda: "Running" in step.log(), "the launcher to see the job run")
    job = cluster.only_job()
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=TIMEOUT) == launcher.EXIT_CANCELLED, step.log()
    assert f"deleted TFJob {NAMESPACE}/{step.job_name()} and its pods" in step.log()
    step.wait_for(lambda: job.removed.is_set(), "the job to be removed")
    assert cluster.job(NAMESPACE, step.job_name()) is None
    assert all(r.current.proc.poll() is not None for r in job.replicas)
    deletes = [r for r in cluster.requests if r[0] == "DELETE"]
    assert len(deletes) == 1 and deletes[0][2] == 200
    print(f"SIGTERM to job gone: {time.monotonic() - started:.1f}s")


def test_job_past_its_active_deadline_fails_the_step_with_the_reason(cluster, step_factory):
    step = step_factory("wait", active_deadline_seconds=2)
    code, log = step.run()
    assert code == launcher.EXIT_FAILED, log
    assert (f"TFJob {NAMESPACE}/{step.job_name()} failed (TFJobFailed): Job {step.job_name()} "
            "has failed because it was active longer than specified deadline") in log
    job = cluster.only_job()
    assert job.manifest["spec"]["runPolicy"]["activeDeadlineSeconds"] == 2
    # cleanPodPolicy Running: the operator stopped the replicas that were still running.
    step.wait_for(lambda: all(r.current.proc.poll() is not None for r in job.replicas),
                  "the replicas to be stopped")


def test_retried_step_replaces_the_failed_job_of_its_previous_attempt(cluster, step_factory):
    failing = step_factory("worker-fails")
    assert failing.run()[0] == launcher.EXIT_FAILED
    retry = step_factory("ok")  # The same ExecutorInput: the same job name.
    code, log = retry.run()
    assert code == 0, log
    assert "is a previous attempt that failed" in log
    assert [j["metadata"]["name"] for j in cluster.created] == [retry.job_name()] * 2
    assert os.path.exists(retry.output_file)


def test_a_job_of_that_name_for_other_outputs_is_left_alone(cluster, step_factory):
    step = step_factory("ok")
    other = step_factory("ok")
    other.executor_input = json.loads(json.dumps(step.executor_input))
    other.executor_input["outputs"]["artifacts"]["model"]["artifacts"][0]["uri"] += "-other"
    job = launcher.Launcher(step.config, other.args(), kube=None)  # type: ignore[arg-type]
    manifest = job.manifest(launcher.PodInfo())
    manifest["metadata"]["name"] = step.job_name()  # A collision of the hashed names.
    manifest["metadata"]["namespace"] = NAMESPACE
    assert cluster.create_job(NAMESPACE, manifest)[0] == 201
    code, log = step.run()
    assert code == launcher.EXIT_FAILED
    assert "exists but trains" in log
    assert len(cluster.created) == 1 and not cluster.only_job().manifest["metadata"].get(
        "deletionTimestamp")


def test_manifest_the_api_server_refuses_fails_the_step_with_its_message(
        cluster, step_factory, monkeypatch):
    from kubernetes import client

    step = step_factory("ok")
    kube = launcher.Kube(client.ApiClient(client.Configuration(host=cluster.url)))
    run = launcher.Launcher(dataclasses.replace(step.config, namespace=NAMESPACE), step.args(),
                            kube)
    build = run.manifest

    def with_string_replica_count(info):
        manifest = build(info)
        manifest["spec"]["tfReplicaSpecs"]["Worker"]["replicas"] = "1"
        return manifest

    monkeypatch.setattr(run, "manifest", with_string_replica_count)
    with pytest.raises(launcher.LaunchError, match="the API server refused") as refused:
        run.create_or_attach()
    assert "tfReplicaSpecs.Worker.replicas: '1' is not of type 'integer'" in str(refused.value)
    assert not cluster.created


def test_role_allows_exactly_what_the_launcher_does():
    rules = {(g, r): set(rule["verbs"]) for rule in role_rules()
             for g in rule["apiGroups"] for r in rule["resources"]}
    assert rules == {("kubeflow.org", "tfjobs"): {"create", "get", "list", "watch", "delete"},
                     ("", "pods"): {"get", "list", "watch"}, ("", "pods/log"): {"get"}}


def test_launcher_config_round_trips_through_json():
    config = LauncherConfig(component="Trainer", workers=4, image="i", command=("python",),
                            cpu=8, memory_gb=32, gpu_type="nvidia.com/gpu", gpu_count=2,
                            node_selector={"pool": "gpu"},
                            tolerations=({"key": "k", "operator": "Exists"},))
    assert LauncherConfig.from_json(config.to_json()) == config
    with pytest.raises(ValueError, match="unknown setting"):
        LauncherConfig.from_json(json.dumps({**json.loads(config.to_json()), "wokers": 2}))
