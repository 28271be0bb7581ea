"""The Trainer as a Kubeflow Training Operator TFJob: settings, job name, manifest and its checks.

The Trainer step's launcher (`kubeflow/launcher.py`) builds one TFJob (`kubeflow.org/v1`) of a
Chief and N-1 Workers. Every replica runs the Trainer step's own command (TFX's
`kubeflow_v2_run_executor` with the Trainer's executor) on the step's own ExecutorInput, so each
trains on the same inputs, outputs and exec properties; the operator sets `TF_CONFIG`, from which
`components/trainer/distribute.py` picks MultiWorkerMirroredStrategy. Only the ExecutorInput's
`outputs.outputFile` differs: the chief writes its ExecutorOutput to shared storage, where the
launcher picks it up; the workers write theirs to a file in their pod that nobody reads.

The API server checks a TFJob against the CRD's `openAPIV3Schema` (`schema_errors` does the same
with jsonschema), but the schema leaves `tfReplicaSpecs` and the policies free-form, so
`check_tfjob` adds what the operator relies on: only Chief and Worker replica types, one Chief,
known restart and clean-pod policies, a name short enough for the pods' names, the `tensorflow`
container with its `tfjob-port`, the Istio annotation. This module is imported by the launcher
pod, so it imports nothing heavy.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

GROUP, VERSION, PLURAL, KIND = "kubeflow.org", "v1", "tfjobs", "TFJob"
API_VERSION = f"{GROUP}/{VERSION}"
CONTAINER_NAME = "tensorflow"  # The operator finds the training container by this name...
PORT_NAME, PORT = "tfjob-port", 2222  # ...and the port TF_CONFIG names by this one.
CHIEF, WORKER = "Chief", "Worker"
REPLICA_TYPES = (CHIEF, WORKER)
RESTART_POLICIES = ("Always", "OnFailure", "Never", "ExitCode")
CLEAN_POD_POLICIES = ("None", "Running", "All")
# Pods and their headless services are named <job>-worker-<index>: a DNS label (63 characters)
# leaves the job name 48 with room for the suffix.
MAX_NAME_LENGTH = 48
ISTIO_SIDECAR_ANNOTATION = "sidecar.istio.io/inject"
# Labels the operator puts on every replica pod.
JOB_NAME_LABEL = "training.kubeflow.org/job-name"
REPLICA_TYPE_LABEL = "training.kubeflow.org/replica-type"
REPLICA_INDEX_LABEL = "training.kubeflow.org/replica-index"
# Ours: which step output the job trains, so a restarted launcher knows the job is its own.
OUTPUT_ANNOTATION = "siamese-tfx.io/output-uri"
COMPONENT_LABEL = "siamese-tfx.io/component"
RUN_ID_LABEL = "pipeline/runid"  # KFP's label of a run's pods, copied when the launcher has it.

_DNS_1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_LABEL_KEY = re.compile(
    r"([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


@dataclass(frozen=True)
class LauncherConfig:
    """What the compiled pipeline tells the launcher (one JSON argument of its command)."""

    component: str
    workers: int  # The Chief and workers - 1 Workers.
    image: str
    command: Sequence[str]  # The step's own command (TFX's executor entry point).
    cpu: float
    memory_gb: float
    gpu_type: str = ""
    gpu_count: int = 0
    namespace: str = ""  # Empty: the launcher pod's namespace.
    service_account: str = ""  # Empty: the launcher pod's service account.
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: Sequence[Mapping[str, Any]] = ()
    pod_labels: Mapping[str, str] = field(default_factory=dict)
    restart_policy: str = "OnFailure"
    backoff_limit: int = 3
    active_deadline_seconds: int = 0  # 0: none.
    ttl_seconds_after_finished: int = 86400  # -1: none.
    clean_pod_policy: str = "Running"
    poll_seconds: float = 10.0

    def to_json(self) -> str:
        values = dataclasses.asdict(self)
        values["tolerations"] = [dict(t) for t in self.tolerations]
        values["command"] = list(self.command)
        return json.dumps(values, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> "LauncherConfig":
        values = json.loads(text)
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"launcher config: unknown setting(s) {unknown}")
        values["tolerations"] = tuple(values.get("tolerations", ()))
        values["command"] = tuple(values.get("command", ()))
        return cls(**values)


def parse_key_values(items: Sequence[str], what: str) -> dict[str, str]:
    """`key=value` strings as a dict; `what` names the setting in errors."""
    result = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not _LABEL_KEY.fullmatch(key):
            raise ValueError(f"{what}: {item!r} is not key=value with a Kubernetes label key")
        if not _LABEL_VALUE.fullmatch(value) or len(value) > 63:
            raise ValueError(f"{what}: {value!r} (of {key}) is not a Kubernetes label value")
        result[key] = value
    return result


def parse_toleration(text: str) -> dict[str, Any]:
    """A toleration from `key=value:Effect`, `key:Effect` (any value), `key` or its JSON."""
    what = f"toleration {text!r}"
    if text.lstrip().startswith("{"):
        try:
            toleration = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{what}: not valid JSON ({e})") from None
        if not isinstance(toleration, dict):
            raise ValueError(f"{what}: not a JSON object")
        allowed = {"key", "operator", "value", "effect", "tolerationSeconds"}
        unknown = sorted(set(toleration) - allowed)
        if unknown:
            raise ValueError(f"{what}: unknown field(s) {unknown}; known: {sorted(allowed)}")
    else:
        spec, _, effect = text.partition(":")
        key, sep, value = spec.partition("=")
        toleration = {"key": key, "operator": "Equal" if sep else "Exists"}
        if sep:
            toleration["value"] = value
        if effect:
            toleration["effect"] = effect
    if toleration.get("operator", "Equal") not in ("Equal", "Exists"):
        raise ValueError(f"{what}: operator must be Equal or Exists")
    if toleration.get("effect", "") not in ("",) + _EFFECTS:
        raise ValueError(f"{what}: effect must be one of {_EFFECTS}")
    if toleration.get("operator") == "Exists" and toleration.get("value"):
        raise ValueError(f"{what}: operator Exists takes no value")
    if not toleration.get("key") and toleration.get("operator") != "Exists":
        raise ValueError(f"{what}: a toleration without key must have operator Exists")
    return toleration


def job_name(component: str, identity: str) -> str:
    """Deterministic TFJob name: the component (DNS-1035) and a hash of `identity` (what the step
    writes: the same run and task give the same name, so a restarted launcher finds its job)."""
    slug = re.sub(r"[^a-z0-9]+", "-", component.lower()).strip("-") or "trainer"
    if not slug[0].isalpha():
        slug = "t-" + slug
    digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
    return f"{slug[:MAX_NAME_LENGTH - len(digest) - 1].rstrip('-')}-{digest}"


def _quantity(value: float, unit: str = "") -> str:
    return f"{value:g}{unit}"


def _resources(config: LauncherConfig) -> dict[str, dict[str, str]]:
    """Requests = limits (Guaranteed QoS: a training pod is not the one evicted first)."""
    requests = {"cpu": _quantity(config.cpu), "memory": _quantity(config.memory_gb, "G")}
    limits = dict(requests)
    if config.gpu_count:
        limits[config.gpu_type] = str(config.gpu_count)
    return {"requests": requests, "limits": limits}


def _replica(config: LauncherConfig, replicas: int, command: Sequence[str],
             args: Sequence[str], labels: Mapping[str, str]) -> dict[str, Any]:
    container = {
        "name": CONTAINER_NAME,
        "image": config.image,
        "command": list(command),
        "args": list(args),
        "env": [{"name": "PYTHONUNBUFFERED", "value": "1"}],  # The log streams as it is written.
        "ports": [{"name": PORT_NAME, "containerPort": PORT}],
        "resources": _resources(config),
    }
    pod_spec: dict[str, Any] = {"containers": [container]}
    if config.service_account:
        pod_spec["serviceAccountName"] = config.service_account
    if config.node_selector:
        pod_spec["nodeSelector"] = dict(config.node_selector)
    if config.tolerations:
        pod_spec["tolerations"] = [dict(t) for t in config.tolerations]
    return {
        "replicas": replicas,
        "restartPolicy": config.restart_policy,
        "template": {
            "metadata": {
                "labels": {**config.pod_labels, **labels},
                # Istio's sidecar would stand between the workers' gRPC connections.
                "annotations": {ISTIO_SIDECAR_ANNOTATION: "false"},
            },
            "spec": pod_spec,
        },
    }


def run_policy(config: LauncherConfig) -> dict[str, Any]:
    policy: dict[str, Any] = {"cleanPodPolicy": config.clean_pod_policy,
                              "backoffLimit": config.backoff_limit}
    if config.active_deadline_seconds:
        policy["activeDeadlineSeconds"] = config.active_deadline_seconds
    if config.ttl_seconds_after_finished >= 0:
        policy["ttlSecondsAfterFinished"] = config.ttl_seconds_after_finished
    return policy


def build_tfjob(config: LauncherConfig, name: str, namespace: str,
                args: Mapping[str, Sequence[str]], identity: str,
                owner: Optional[Mapping[str, str]] = None,
                labels: Optional[Mapping[str, str]] = None) -> dict[str, Any]:
    """The TFJob: a Chief and `config.workers - 1` Workers running `config.command` with
    `args[<replica type>]`.

    `identity` (the step's output URI) is recorded as an annotation; `owner`, if given, becomes
    the job's ownerReference (Kubernetes deletes the job with it); `labels` go on the job and
    its pods.
    """
    labels = {COMPONENT_LABEL: _label_value(config.component), **(labels or {})}
    counts = {CHIEF: 1, WORKER: config.workers - 1}
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "labels": dict(labels),
                                "annotations": {OUTPUT_ANNOTATION: identity}}
    if owner:
        metadata["ownerReferences"] = [dict(owner)]
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": metadata,
        "spec": {
            "runPolicy": run_policy(config),
            "tfReplicaSpecs": {kind: _replica(config, count, config.command, args[kind], labels)
                               for kind, count in counts.items() if count},
        },
    }


def _label_value(text: str) -> str:
    value = re.sub(r"[^A-Za-z0-9_.-]+", "-", text)[:63].strip("-_.")
    return value


def check_tfjob(job: Mapping[str, Any]) -> list[str]:
    """What the operator needs that the CRD schema does not check; one message per problem."""
    errors = []
    if job.get("apiVersion") != API_VERSION or job.get("kind") != KIND:
        errors.append(f"apiVersion/kind must be {API_VERSION}/{KIND}")
    name = job.get("metadata", {}).get("name", "")
    if not _DNS_1035.fullmatch(name) or len(name) > MAX_NAME_LENGTH:
        errors.append(f"metadata.name {name!r} must be a DNS-1035 label of at most "
                      f"{MAX_NAME_LENGTH} characters (its pods are <name>-worker-<i>)")
    spec = job.get("spec", {})
    policy = spec.get("runPolicy", {})
    if policy.get("cleanPodPolicy", "None") not in CLEAN_POD_POLICIES:
        errors.append(f"spec.runPolicy.cleanPodPolicy {policy['cleanPodPolicy']!r} must be one "
                      f"of {CLEAN_POD_POLICIES}")
    for key in ("backoffLimit", "activeDeadlineSeconds", "ttlSecondsAfterFinished"):
        value = policy.get(key, 0)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            errors.append(f"spec.runPolicy.{key} {value!r} must be an integer >= 0")
    replicas = spec.get("tfReplicaSpecs", {})
    unknown = sorted(set(replicas) - set(REPLICA_TYPES))
    if unknown:
        errors.append(f"spec.tfReplicaSpecs: unknown replica type(s) {unknown}; this job has "
                      f"{list(REPLICA_TYPES)}")
    if replicas.get(CHIEF, {}).get("replicas") != 1:
        errors.append("spec.tfReplicaSpecs.Chief: exactly one Chief replica (it writes the "
                      "SavedModel)")
    for kind, replica in replicas.items():
        errors += _check_replica(f"spec.tfReplicaSpecs.{kind}", replica)
    return errors


def _check_replica(path: str, replica: Mapping[str, Any]) -> list[str]:
    errors = []
    count = replica.get("replicas")
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        errors.append(f"{path}.replicas {count!r} must be an integer >= 1")
    if replica.get("restartPolicy") not in RESTART_POLICIES:
        errors.append(f"{path}.restartPolicy {replica.get('restartPolicy')!r} must be one of "
                      f"{RESTART_POLICIES}")
    template = replica.get("template", {})
    annotations = template.get("metadata", {}).get("annotations", {})
    if annotations.get(ISTIO_SIDECAR_ANNOTATION) != "false":
        errors.append(f"{path}.template.metadata.annotations: {ISTIO_SIDECAR_ANNOTATION} must "
                      "be \"false\" (the sidecar blocks the workers' connections)")
    containers = template.get("spec", {}).get("containers", [])
    named = [c for c in containers if c.get("name") == CONTAINER_NAME]
    if len(named) != 1:
        errors.append(f"{path}.template.spec.containers: needs one container named "
                      f"{CONTAINER_NAME!r}")
        return errors
    container = named[0]
    if not container.get("image"):
        errors.append(f"{path}: container {CONTAINER_NAME!r} has no image")
    if not container.get("command"):
        errors.append(f"{path}: container {CONTAINER_NAME!r} has no command")
    ports = [p for p in container.get("ports", []) if p.get("name") == PORT_NAME]
    if [p.get("containerPort") for p in ports] != [PORT]:
        errors.append(f"{path}: container {CONTAINER_NAME!r} needs port {PORT_NAME} = {PORT}")
    for resource in container.get("resources", {}).get("limits", {}):
        if resource not in ("cpu", "memory", "ephemeral-storage") and "/" not in resource:
            errors.append(f"{path}: resource {resource!r} is not a Kubernetes resource name "
                          "(a GPU is e.g. nvidia.com/gpu)")
    return errors


def raise_for_tfjob(job: Mapping[str, Any]) -> None:
    """ValueError listing every `check_tfjob` problem, if any."""
    errors = check_tfjob(job)
    if errors:
        raise ValueError(f"TFJob {job.get('metadata', {}).get('name')!r} is invalid:\n  "
                         + "\n  ".join(errors))


def crd_schema(crd: Mapping[str, Any], version: str = VERSION) -> dict[str, Any]:
    """The openAPIV3Schema the API server checks a TFJob of `version` against."""
    for entry in crd["spec"]["versions"]:
        if entry["name"] == version:
            return entry["schema"]["openAPIV3Schema"]
    raise ValueError(f"the CRD has no version {version!r}")


def schema_errors(job: Mapping[str, Any], crd: Mapping[str, Any]) -> list[str]:
    """Where `job` breaks the CRD's openAPIV3Schema (jsonschema, draft 7), as 'path: message'."""
    import jsonschema

    validator = jsonschema.Draft7Validator(crd_schema(crd))
    return sorted(f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
                  for e in validator.iter_errors(job))
