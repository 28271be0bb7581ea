"""`siamese-tfx kubeflow compile --trainer-workers N`: the Trainer step becomes the TFJob
launcher, and the TFJob it creates for N = 2, 3, 4 passes the CRD's openAPIV3Schema (the API
server's check, ../shared/kubeflow/kubeflow.org_tfjobs.yaml) and our own checks; wrong fields
fail one or the other."""

import copy
import json

import pytest
from fake_kube import load_crd
from google.protobuf import json_format
from kubeflow_fixtures import COMPILE_ARGS, IMAGE, SHARED

from siamese_tfx.kubeflow import launcher, runner, tfjob
from siamese_tfx.kubeflow.config import KubeflowConfig
from siamese_tfx.kubeflow.tfjob import LauncherConfig

pytestmark = pytest.mark.slow  # One compile per N.

WORKFLOW = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "name": "siamese-kfp-abc12",
            "uid": "9b2f3c4d-0000-4000-8000-000000000001"}
TFJOB_ARGS = ["--tfjob-tolerations", "nvidia.com/gpu:NoSchedule",
              "--tfjob-tolerations", '{"key": "spot", "operator": "Exists"}',
              "--tfjob-node-selector", "cloud.google.com/gke-accelerator=nvidia-tesla-t4",
              "--tfjob-pod-labels", "access-ml-pipeline=true",
              "--tfjob-active-deadline-seconds", "86400"]
EXECUTOR = "tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor"


@pytest.fixture(scope="module")
def crd():
    return load_crd()


_COMPILED: dict[int, str] = {}


def _compile(tmp_path_factory, workers: int) -> str:
    """The compiled YAML for `workers` through the CLI, as a user compiles it (once each)."""
    from siamese_tfx.pipeline.cli import main

    if workers not in _COMPILED:
        path = str(tmp_path_factory.mktemp(f"workers{workers}") / "pipeline.yaml")
        args = COMPILE_ARGS + TFJOB_ARGS + ["--trainer-workers", str(workers)]
        assert main(["kubeflow", "compile", "--output", path] + args) == 0
        _COMPILED[workers] = path
    return _COMPILED[workers]


@pytest.fixture(scope="module", params=[2, 3, 4])
def compiled(request, tmp_path_factory):
    """(N, compiled YAML path)."""
    return request.param, _compile(tmp_path_factory, request.param)


def _trainer_container(path):
    # load_spec parses the YAML as a PipelineSpec proto: the file is one KFP accepts.
    spec = json_format.MessageToDict(runner.load_spec(path))
    return spec["deploymentSpec"]["executors"]["Trainer_executor"]["container"]


def _executor_input():
    """What KFP's driver puts in for `{{$}}` (the parts the launcher reads)."""
    run = f"{SHARED}/root/siamese-kfp/9b2f3c4d"
    run_fn = "siamese_tfx.components.trainer.train.run_fn"
    return {"inputs": {"parameterValues": {"run_fn": run_fn}},
            "outputs": {"artifacts": {
                "model": {"artifacts": [{"uri": f"{run}/Trainer/model",
                                         "type": {"schemaTitle": "tfx.Model"}}]},
                "model_run": {"artifacts": [{"uri": f"{run}/Trainer/model_run",
                                             "type": {"schemaTitle": "tfx.ModelRun"}}]}},
                        "outputFile": "/tmp/kfp_outputs/output_metadata.json"}}


def _job(container):
    """The TFJob the compiled launcher builds at run time, from its compiled command and args."""
    command = container["command"]
    assert command[:3] == list(runner.LAUNCHER_COMMAND) and command[-1] == "--"
    config = LauncherConfig.from_json(command[command.index("--config") + 1])
    args = [json.dumps(_executor_input()) if a == "{{$}}" else a for a in container["args"]]
    run = launcher.Launcher(config, args, kube=None)
    info = launcher.PodInfo(owner=WORKFLOW, service_account="pipeline-runner", run_id="r-1")
    return run.manifest(info), config


def test_tfjob_for_n_workers_passes_the_crd_schema_and_our_checks(compiled, crd):
    workers, path = compiled
    job, _ = _job(_trainer_container(path))
    assert tfjob.schema_errors(job, crd) == []
    assert tfjob.check_tfjob(job) == []
    specs = job["spec"]["tfReplicaSpecs"]
    assert {kind: spec["replicas"] for kind, spec in specs.items()} == {
        "Chief": 1, "Worker": workers - 1}
    assert job["metadata"]["ownerReferences"] == [WORKFLOW]
    assert job["spec"]["runPolicy"] == {"cleanPodPolicy": "Running", "backoffLimit": 3,
                                        "activeDeadlineSeconds": 86400,
                                        "ttlSecondsAfterFinished": 86400}
    print(f"N={workers}: {len(json.dumps(job))} bytes of TFJob, schema and checks pass")


def test_gpus_are_in_the_replicas_and_the_launcher_asks_for_little(compiled):
    workers, path = compiled
    container = _trainer_container(path)
    # The step's pod is the launcher: half a core, 1 GB, no GPU.
    assert container["resources"] == {"cpuLimit": 0.5, "memoryLimit": 1.0,
                                      "resourceCpuLimit": "0.5", "resourceMemoryLimit": "1G"}
    job, _ = _job(container)
    for kind, spec in job["spec"]["tfReplicaSpecs"].items():
        pod = spec["template"]
        [replica] = pod["spec"]["containers"]
        assert replica["resources"] == {
            "limits": {"cpu": "12", "memory": "48G", "nvidia.com/gpu": "2"},
            "requests": {"cpu": "12", "memory": "48G"}}, kind
        assert replica["image"] == IMAGE
        assert pod["spec"]["serviceAccountName"] == "pipeline-runner"
        assert pod["spec"]["nodeSelector"] == {
            "cloud.google.com/gke-accelerator": "nvidia-tesla-t4"}
        assert pod["spec"]["tolerations"] == [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
            {"key": "spot", "operator": "Exists"}]
        assert pod["metadata"]["labels"]["access-ml-pipeline"] == "true"
        assert pod["metadata"]["annotations"] == {"sidecar.istio.io/inject": "false"}


def test_replicas_run_tfx_trainer_executor_on_the_steps_executor_input(compiled):
    _, path = compiled
    container = _trainer_container(path)
    job, _ = _job(container)
    step_input = _executor_input()
    for kind, spec in job["spec"]["tfReplicaSpecs"].items():
        [replica] = spec["template"]["spec"]["containers"]
        assert replica["command"] == ["python", "-m", EXECUTOR]
        args = replica["args"]
        assert args[:2] == ["--executor_class_path",
                            "tfx.components.trainer.executor.GenericExecutor"]
        position = args.index(launcher.INVOCATION_FLAG) + 1
        # Everything but the ExecutorInput is the compiled step's args, Beam args included.
        assert args[:position] + args[position + 1:] == [
            a for a in container["args"] if a != "{{$}}"]
        replica_input = json.loads(args[position])
        output_file = replica_input["outputs"].pop("outputFile")
        expected = copy.deepcopy(step_input)
        del expected["outputs"]["outputFile"]
        assert replica_input == expected, kind
        model_run = step_input["outputs"]["artifacts"]["model_run"]["artifacts"][0]["uri"]
        assert output_file == (f"{model_run}/{launcher.CHIEF_OUTPUT}" if kind == "Chief"
                               else launcher.WORKER_OUTPUT)


@pytest.fixture(scope="module")
def job_for_two(tmp_path_factory):
    return _job(_trainer_container(_compile(tmp_path_factory, 2)))[0]


def _broken(job, edit):
    job = copy.deepcopy(job)
    edit(job)
    return job


def _worker(job):
    return job["spec"]["tfReplicaSpecs"]["Worker"]


def test_misspelled_replica_type_passes_the_crd_schema_but_fails_our_check(job_for_two, crd):
    job = _broken(job_for_two, lambda j: j["spec"]["tfReplicaSpecs"].__setitem__(
        "Wroker", j["spec"]["tfReplicaSpecs"].pop("Worker")))
    # tfReplicaSpecs is a free-form map in the CRD: the API server would accept it, and the
    # operator would never start a worker.
    assert tfjob.schema_errors(job, crd) == []
    assert tfjob.check_tfjob(job) == [
        "spec.tfReplicaSpecs: unknown replica type(s) ['Wroker']; this job has "
        "['Chief', 'Worker']"]
    with pytest.raises(ValueError, match="Wroker"):
        tfjob.raise_for_tfjob(job)


@pytest.mark.parametrize("edit, where, message", [
    (lambda j: _worker(j).__setitem__("replicas", "2"), "spec.tfReplicaSpecs.Worker.replicas",
     "'2' is not of type 'integer'"),
    (lambda j: _worker(j)["template"]["spec"]["containers"][0].pop("name"),
     "spec.tfReplicaSpecs.Worker.template.spec.containers.0", "'name' is a required property"),
    (lambda j: _worker(j)["template"]["spec"]["containers"][0]["ports"][0].__setitem__(
        "containerPort", "2222"),
     "spec.tfReplicaSpecs.Worker.template.spec.containers.0.ports.0.containerPort",
     "'2222' is not of type 'integer'"),
    (lambda j: j["spec"]["runPolicy"].__setitem__("backoffLimit", 1.5),
     "spec.runPolicy.backoffLimit", "1.5 is not of type 'integer'"),
])
def test_wrong_field_fails_the_crd_schema(job_for_two, crd, edit, where, message):
    assert tfjob.schema_errors(job_for_two, crd) == []
    errors = tfjob.schema_errors(_broken(job_for_two, edit), crd)
    assert f"{where}: {message}" in errors, errors


@pytest.mark.parametrize("edit, message", [
    (lambda j: _worker(j).__setitem__("restartPolicy", "Whenever"),
     "spec.tfReplicaSpecs.Worker.restartPolicy 'Whenever' must be one of"),
    (lambda j: j["spec"]["runPolicy"].__setitem__("cleanPodPolicy", "Sometimes"),
     "spec.runPolicy.cleanPodPolicy 'Sometimes' must be one of"),
    (lambda j: _worker(j)["template"]["metadata"]["annotations"].clear(),
     "sidecar.istio.io/inject must be \"false\""),
    (lambda j: _worker(j)["template"]["spec"]["containers"][0].__setitem__("name", "main"),
     "needs one container named 'tensorflow'"),
    (lambda j: _worker(j)["template"]["spec"]["containers"][0]["ports"][0].__setitem__(
        "name", "grpc"), "needs port tfjob-port = 2222"),
    (lambda j: j["metadata"].__setitem__("name", "trainer-" + "a" * 41),
     "must be a DNS-1035 label of at most 48 characters"),
    (lambda j: j["spec"]["tfReplicaSpecs"]["Chief"].__setitem__("replicas", 2),
     "exactly one Chief replica"),
    (lambda j: j["spec"]["tfReplicaSpecs"].pop("Chief"), "exactly one Chief replica"),
])
def test_what_the_crd_schema_leaves_free_fails_our_check(job_for_two, crd, edit, message):
    job = _broken(job_for_two, edit)
    assert any(message in e for e in tfjob.check_tfjob(job)), tfjob.check_tfjob(job)


def test_job_name_is_deterministic_and_fits_the_pod_names():
    name = tfjob.job_name("Trainer", "gs://b/root/run-1/Trainer/model")
    assert name == tfjob.job_name("Trainer", "gs://b/root/run-1/Trainer/model")
    assert name != tfjob.job_name("Trainer", "gs://b/root/run-2/Trainer/model")
    assert name.startswith("trainer-") and len(name) == len("trainer-") + 16
    long = tfjob.job_name("My_Very.Long Component Name That Goes On " * 3, "x")
    assert len(long) <= tfjob.MAX_NAME_LENGTH and tfjob._DNS_1035.fullmatch(long)
    assert tfjob.job_name("2nd-trainer", "x").startswith("t-2nd-trainer-")


@pytest.mark.parametrize("settings, message", [
    (dict(trainer_workers=0), "trainer_workers must be >= 1"),
    (dict(trainer_workers=2, trainer_gpu_type="NVIDIA_TESLA_T4"),
     "Kubernetes resource name of the GPU"),
    (dict(tfjob_tolerations=("gpu:NoScheduled",)), "tfjob_tolerations: .*effect must be one of"),
    (dict(tfjob_tolerations=('{"key": "a", "opertor": "Exists"}',)), "unknown field"),
    (dict(tfjob_node_selector=("pool",)), "tfjob_node_selector: 'pool' is not key=value"),
    (dict(tfjob_pod_labels=("a=b c",)), "tfjob_pod_labels: 'b c'"),
    (dict(tfjob_restart_policy="Always"), "tfjob_restart_policy must be one of"),
    (dict(tfjob_ttl_seconds_after_finished=-2), "tfjob_ttl_seconds_after_finished"),
])
def test_bad_tfjob_settings_are_refused_when_the_config_is_built(settings, message):
    with pytest.raises(ValueError, match=message):
        KubeflowConfig(image=IMAGE, **settings)


def test_toleration_forms():
    assert tfjob.parse_toleration("nvidia.com/gpu=present:NoSchedule") == {
        "key": "nvidia.com/gpu", "operator": "Equal", "value": "present",
        "effect": "NoSchedule"}
    assert tfjob.parse_toleration("spot") == {"key": "spot", "operator": "Exists"}
    assert tfjob.parse_toleration('{"operator": "Exists"}') == {"operator": "Exists"}
