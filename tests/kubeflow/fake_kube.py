"""A test double of a Kubernetes cluster with the Training Operator, over real HTTP on 127.0.0.1.

`FakeCluster` serves the API calls the TFJob launcher makes (what the `kubernetes` client sends:
custom objects for `kubeflow.org/v1` tfjobs, pods, pod logs) and plays the operator and the
kubelets:

- a created TFJob is checked like the API server checks it (the CRD's openAPIV3Schema from
  ../shared/kubeflow, 422 Invalid otherwise; 409 AlreadyExists for a name in use), and every
  request is authorised against the Role in kubeflow/rbac.yaml (403 otherwise);
- for every replica it starts one local process running the replica's own container command and
  args, with the TF_CONFIG the operator sets (chief and workers at 127.0.0.1 with free ports),
  the container's env, and the "image" environment the test gives; its output is the pod's log;
- it reports the job's conditions from the exit codes the way the operator does: Succeeded when
  the chief exits 0; a failed container is restarted in place (OnFailure), recreated only for
  exit codes >= 128 (ExitCode) or not at all (Never), up to backoffLimit; Failed with the
  operator's messages; activeDeadlineSeconds, cleanPodPolicy and ttlSecondsAfterFinished apply;
- DELETE kills the job's processes (foreground: the job stays, with a deletionTimestamp, until
  they are gone).
"""

from __future__ import annotations

import copy
import datetime
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional
from urllib.parse import parse_qs, urlparse

import yaml

from siamese_tfx.kubeflow import tfjob

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
CRD_PATH = os.path.join(REPO, "..", "shared", "kubeflow", "kubeflow.org_tfjobs.yaml")
RBAC_PATH = os.path.join(REPO, "kubeflow", "rbac.yaml")
KILL_GRACE_SECONDS = 5.0


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def load_crd() -> dict[str, Any]:
    """The TFJob CRD, read where the project keeps it (../shared/kubeflow)."""
    if not os.path.exists(CRD_PATH):
        import pytest

        message = f"the TFJob CRD is not at {os.path.abspath(CRD_PATH)}"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI runs with ../shared beside the clone")
        pytest.skip(message)
    with open(CRD_PATH) as f:
        return yaml.safe_load(f)


def role_rules(path: str = RBAC_PATH) -> list[dict[str, Any]]:
    with open(path) as f:
        documents = [d for d in yaml.safe_load_all(f) if d]
    return [rule for d in documents if d["kind"] == "Role" for rule in d["rules"]]


class Container:
    """One run of a replica's container: its process and its log file."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: str, log_path: str):
        self.log_path = log_path
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        self.started = now()
        self.exit_code: Optional[int] = None
        self.finished = ""

    def poll(self) -> Optional[int]:
        if self.exit_code is None:
            code = self.proc.poll()
            if code is not None:
                self.exit_code = code if code >= 0 else 128 - code
                self.finished = now()
        return self.exit_code

    def kill(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def state(self) -> dict[str, Any]:
        if self.poll() is None:
            return {"running": {"startedAt": self.started}}
        reason = "Completed" if self.exit_code == 0 else "Error"
        return {"terminated": {"exitCode": self.exit_code, "reason": reason,
                               "startedAt": self.started, "finishedAt": self.finished}}


class Replica:
    """A replica pod: its identity and its container runs (restarts in place append one)."""

    def __init__(self, job: "Job", kind: str, index: int):
        self.job, self.kind, self.index = job, kind, index
        self.name = f"{job.name}-{kind.lower()}-{index}"
        self.uid = str(uuid.uuid4())
        self.runs: list[Container] = []
        self.deleted = False
        self.handled: Optional[Container] = None  # The failed run the operator acted on.

    def start(self) -> None:
        spec = self.job.manifest["spec"]["tfReplicaSpecs"][self.kind]
        [container] = [c for c in spec["template"]["spec"]["containers"]
                       if c["name"] == tfjob.CONTAINER_NAME]
        env = dict(self.job.cluster.env)
        env.update({e["name"]: e.get("value", "") for e in container.get("env", [])})
        env["TF_CONFIG"] = json.dumps({
            "cluster": self.job.cluster_spec,
            "task": {"type": self.kind.lower(), "index": self.index},
            "environment": "cloud"})
        log = os.path.join(self.job.cluster.workdir,
                           f"{self.name}-{self.uid[:8]}-{len(self.runs)}.log")
        self.runs.append(Container(container["command"] + container.get("args", []), env,
                                   self.job.cluster.cwd, log))

    @property
    def current(self) -> Optional[Container]:
        return self.runs[-1] if self.runs else None

    def phase(self) -> str:
        code = self.current.poll() if self.current else None
        if self.current is None:
            return "Pending"
        if code is None:
            return "Running"
        return "Succeeded" if code == 0 else "Failed"

    def to_pod(self) -> dict[str, Any]:
        spec = self.job.manifest["spec"]["tfReplicaSpecs"][self.kind]
        template = spec["template"]
        labels = {**template.get("metadata", {}).get("labels", {}),
                  tfjob.JOB_NAME_LABEL: self.job.name,
                  tfjob.REPLICA_TYPE_LABEL: self.kind.lower(),
                  tfjob.REPLICA_INDEX_LABEL: str(self.index)}
        if self.kind == tfjob.CHIEF:
            labels["training.kubeflow.org/job-role"] = "master"
        image = template["spec"]["containers"][0]["image"]
        status: dict[str, Any] = {"phase": self.phase()}
        if self.current:
            previous = self.runs[-2].state() if len(self.runs) > 1 else {}
            status["containerStatuses"] = [{
                "name": tfjob.CONTAINER_NAME, "image": image, "imageID": "", "ready":
                self.current.poll() is None, "restartCount": len(self.runs) - 1,
                "state": self.current.state(), "lastState": previous}]
        return {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": self.name, "namespace": self.job.namespace, "uid": self.uid,
                         "labels": labels,
                         "annotations": template.get("metadata", {}).get("annotations", {}),
                         "ownerReferences": [{
                             "apiVersion": tfjob.API_VERSION, "kind": tfjob.KIND,
                             "name": self.job.name, "uid": self.job.uid, "controller": True}]},
            "spec": {"containers": copy.deepcopy(template["spec"]["containers"]),
                     "serviceAccountName": template["spec"].get("serviceAccountName",
                                                                "default"),
                     "restartPolicy": "Never"},
            "status": status,
        }


class Job:
    """A TFJob and the operator's reconcile loop for it (a thread)."""

    def __init__(self, cluster: "FakeCluster", manifest: dict[str, Any]):
        self.cluster = cluster
        self.manifest = manifest
        self.name = manifest["metadata"]["name"]
        self.namespace = manifest["metadata"]["namespace"]
        self.uid = manifest["metadata"]["uid"]
        counts = {kind: spec["replicas"]
                  for kind, spec in manifest["spec"]["tfReplicaSpecs"].items()}
        self.replicas = [Replica(self, kind, i) for kind in tfjob.REPLICA_TYPES
                         for i in range(counts.get(kind, 0))]
        ports = iter(free_ports(len(self.replicas)))
        self.cluster_spec: dict[str, list[str]] = {}
        for replica in self.replicas:
            self.cluster_spec.setdefault(replica.kind.lower(), []).append(
                f"127.0.0.1:{next(ports)}")
        self.failures = 0
        self.started_at = 0.0
        self.finished_at = 0.0
        self.deleting = False
        self.removed = threading.Event()
        manifest["status"] = {"conditions": []}
        self._condition("Created", "TFJobCreated", f"TFJob {self.namespace}/{self.name} is "
                        "created.")
        self.thread = threading.Thread(target=self._reconcile, daemon=True)
        self.thread.start()

    # Status.
    @property
    def policy(self) -> dict[str, Any]:
        return self.manifest["spec"].get("runPolicy", {})

    def _condition(self, kind: str, reason: str, message: str) -> None:
        conditions = self.manifest["status"]["conditions"]
        for c in conditions:
            if c["type"] == "Running" and kind in ("Succeeded", "Failed"):
                c["status"] = "False"
        conditions.append({"type": kind, "status": "True", "reason": reason, "message": message,
                           "lastUpdateTime": now(), "lastTransitionTime": now()})

    def finished(self) -> bool:
        return any(c["type"] in ("Succeeded", "Failed") and c["status"] == "True"
                   for c in self.manifest["status"]["conditions"])

    def _fail(self, message: str) -> None:
        self.manifest["status"]["completionTime"] = now()
        self._condition("Failed", "TFJobFailed", message)
        self._clean_pods()

    def _clean_pods(self) -> None:
        policy = self.policy.get("cleanPodPolicy", "None")
        for replica in self.replicas:
            running = replica.current and replica.current.poll() is None
            if policy == "All" or (policy == "Running" and running):
                self.cluster.kill(replica)
                replica.deleted = True

    def to_object(self) -> dict[str, Any]:
        status = self.manifest["status"]
        status["replicaStatuses"] = {}
        for replica in self.replicas:
            counts = status["replicaStatuses"].setdefault(
                replica.kind, {"active": 0, "succeeded": 0, "failed": 0})
            phase = replica.phase()
            counts[{"Running": "active", "Pending": "active", "Succeeded": "succeeded",
                    "Failed": "failed"}[phase]] += 1
        return copy.deepcopy(self.manifest)

    # The operator.
    def _reconcile(self) -> None:
        with self.cluster.lock:
            for replica in self.replicas:
                replica.start()
            self.started_at = time.monotonic()
            self.manifest["status"]["startTime"] = now()
            self._condition("Running", "TFJobRunning",
                            f"TFJob {self.namespace}/{self.name} is running.")
        while not self.removed.is_set():
            with self.cluster.lock:
                if self.deleting:
                    pass
                elif not self.finished():
                    self._step()
                elif self._ttl_expired():
                    self.cluster.delete_job(self.namespace, self.name)
            time.sleep(self.cluster.tick)

    def _ttl_expired(self) -> bool:
        ttl = self.policy.get("ttlSecondsAfterFinished")
        return ttl is not None and time.monotonic() - self.finished_at >= ttl

    def _step(self) -> None:
        deadline = self.policy.get("activeDeadlineSeconds")
        if deadline and time.monotonic() - self.started_at > deadline:
            self._fail(f"Job {self.name} has failed because it was active longer than "
                       "specified deadline")
            self.finished_at = time.monotonic()
            return
        for replica in self.replicas:
            code = replica.current.poll()
            if code is None or replica.deleted:
                continue
            if code == 0:
                if replica.kind == tfjob.CHIEF:
                    self.manifest["status"]["completionTime"] = now()
                    self._condition("Succeeded", "TFJobSucceeded",
                                    f"TFJob {self.namespace}/{self.name} successfully completed.")
                    self._clean_pods()
                    self.finished_at = time.monotonic()
                    return
                continue
            if replica.handled is replica.current:
                continue
            replica.handled = replica.current
            self._replica_failed(replica, code)
            if self.finished():
                self.finished_at = time.monotonic()
                return

    def _replica_failed(self, replica: Replica, code: int) -> None:
        restart = self.manifest["spec"]["tfReplicaSpecs"][replica.kind]["restartPolicy"]
        retry = restart in ("OnFailure", "Always") or (restart == "ExitCode" and code >= 128)
        if not retry:
            self._fail(f"TFJob {self.namespace}/{self.name} has failed because 1 "
                       f"{replica.kind} replica(s) failed.")
            return
        self.failures += 1
        if self.failures > self.policy.get("backoffLimit", 6):
            self._fail(f"Job {self.name} has failed because it has reached the specified "
                       "backoff limit")
            return
        self._condition("Restarting", "TFJobRestarting",
                        f"TFJob {self.name} is restarting because 1 {replica.kind} replica(s) "
                        "failed.")
        if restart == "ExitCode":  # The operator deletes the pod and creates a new one.
            replica.uid, replica.runs = str(uuid.uuid4()), []
        replica.start()


class FakeCluster:
    """The API server, operator and kubelets (see the module doc). Use as a context manager."""

    def __init__(self, workdir: str, env: dict[str, str], cwd: str = REPO,
                 tick: float = 0.05):
        self.workdir, self.env, self.cwd, self.tick = workdir, env, cwd, tick
        self.lock = threading.RLock()
        self.jobs: dict[tuple[str, str], Job] = {}
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}  # Pods that are not replicas.
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status).
        self.created: list[dict[str, Any]] = []  # Every TFJob the server accepted.
        self.crd = load_crd()
        self.rules = role_rules()
        cluster = self

        class Handler(_Handler):
            pass

        Handler.cluster = cluster
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FakeCluster":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        with self.lock:
            jobs = list(self.jobs.values())
        for job in jobs:
            job.removed.set()
            for replica in job.replicas:
                self.kill(replica, wait=True)
        self.server.shutdown()
        self.server.server_close()

    def write_kubeconfig(self, path: str, namespace: str) -> str:
        config = {"apiVersion": "v1", "kind": "Config", "current-context": "fake",
                  "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
                  "users": [{"name": "fake", "user": {}}],
                  "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake",
                                                            "namespace": namespace}}]}
        with open(path, "w") as f:
            yaml.safe_dump(config, f)
        return path

    def add_pod(self, namespace: str, name: str, **metadata: Any) -> dict[str, Any]:
        """A pod that is not a replica (e.g. the launcher's own, with its ownerReferences)."""
        service_account = metadata.pop("service_account", "default")
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": namespace,
                            "uid": metadata.pop("uid", str(uuid.uuid4())), **metadata},
               "spec": {"containers": [{"name": "main", "image": "pipeline"}],
                        "serviceAccountName": service_account},
               "status": {"phase": "Running"}}
        self.pods[(namespace, name)] = pod
        return pod

    # Operator-side helpers for tests.
    def job(self, namespace: str, name: str) -> Optional[Job]:
        with self.lock:
            return self.jobs.get((namespace, name))

    def only_job(self) -> Job:
        with self.lock:
            [job] = self.jobs.values()
            return job

    def kill(self, replica: Replica, sig: int = signal.SIGTERM, wait: bool = False) -> None:
        """Stops a replica's container like the kubelet: `sig`, then SIGKILL after a grace
        period (waiting for it with `wait`, else in the background)."""
        container = replica.current
        if container is None:
            return
        container.kill(sig)

        def escalate() -> None:
            try:
                container.proc.wait(timeout=KILL_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                container.kill(signal.SIGKILL)
                container.proc.wait()

        if wait:
            escalate()
        elif sig != signal.SIGKILL:
            threading.Thread(target=escalate, daemon=True).start()

    def delete_job(self, namespace: str, name: str) -> Optional[dict[str, Any]]:
        with self.lock:
            job = self.jobs.get((namespace, name))
            if job is None:
                return None
            if not job.deleting:
                job.deleting = True
                job.manifest["metadata"]["deletionTimestamp"] = now()
                job.manifest["metadata"]["finalizers"] = ["foregroundDeletion"]
                threading.Thread(target=self._remove, args=(job,), daemon=True).start()
            return job.to_object()

    def _remove(self, job: Job) -> None:
        for replica in job.replicas:
            self.kill(replica, wait=True)
        with self.lock:
            self.jobs.pop((job.namespace, job.name), None)
            job.removed.set()

    # API server.
    def allowed(self, group: str, resource: str, verb: str) -> bool:
        return any(group in r.get("apiGroups", []) and resource in r.get("resources", [])
                   and verb in r.get("verbs", []) for r in self.rules)

    def create_job(self, namespace: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        name = body.get("metadata", {}).get("name", "")
        errors = tfjob.schema_errors(body, self.crd)
        if body.get("metadata", {}).get("namespace", namespace) != namespace:
            errors.append("metadata.namespace: does not match the request's namespace")
        if not name:
            errors.append("metadata.name: Required value")
        if errors:
            return 422, status(422, "Invalid", f'TFJob.kubeflow.org "{name}" is invalid: '
                               + "; ".join(errors))
        with self.lock:
            if (namespace, name) in self.jobs:
                return 409, status(409, "AlreadyExists",
                                   f'tfjobs.kubeflow.org "{name}" already exists')
            manifest = copy.deepcopy(body)
            manifest["metadata"].update(namespace=namespace, uid=str(uuid.uuid4()),
                                        creationTimestamp=now(), generation=1,
                                        resourceVersion=str(len(self.created) + 1))
            self.created.append(copy.deepcopy(manifest))
            job = Job(self, manifest)
            self.jobs[(namespace, name)] = job
            return 201, job.to_object()

    def replica_pods(self, namespace: str) -> list[tuple[Replica, dict[str, Any]]]:
        with self.lock:
            return [(r, r.to_pod()) for job in self.jobs.values() if job.namespace == namespace
                    for r in job.replicas if r.runs and not r.deleted]

    def find_replica(self, namespace: str, name: str) -> Optional[Replica]:
        for replica, _ in self.replica_pods(namespace):
            if replica.name == name:
                return replica
        return None


def status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


_TFJOBS = re.compile(r"^/apis/kubeflow\.org/v1/namespaces/([^/]+)/tfjobs(?:/([^/]+))?$")
_PODS = re.compile(r"^/api/v1/namespaces/([^/]+)/pods(?:/([^/]+)(/log)?)?$")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    cluster: FakeCluster

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, code: int, body: Any, content_type: str = "application/json") -> None:
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        with self.cluster.lock:
            self.cluster.requests.append((self.command, self.path, code))

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"{}") if length else {}

    def _authorised(self, group: str, resource: str, verb: str) -> bool:
        if self.cluster.allowed(group, resource, verb):
            return True
        self._send(403, status(403, "Forbidden", f"{resource}.{group or 'core'} is forbidden: "
                               f"the Role in kubeflow/rbac.yaml does not allow {verb!r}"))
        return False

    def do_POST(self) -> None:
        url = urlparse(self.path)
        match = _TFJOBS.match(url.path)
        body = self._body()
        if not match or match[2]:
            return self._send(404, status(404, "NotFound", f"no route {url.path}"))
        if self._authorised(tfjob.GROUP, tfjob.PLURAL, "create"):
            self._send(*self.cluster.create_job(match[1], body))

    def do_DELETE(self) -> None:
        url = urlparse(self.path)
        self._body()
        match = _TFJOBS.match(url.path)
        if not match or not match[2]:
            return self._send(404, status(404, "NotFound", f"no route {url.path}"))
        if not self._authorised(tfjob.GROUP, tfjob.PLURAL, "delete"):
            return
        deleted = self.cluster.delete_job(match[1], match[2])
        if deleted is None:
            return self._send(404, status(404, "NotFound",
                                          f'tfjobs.kubeflow.org "{match[2]}" not found'))
        self._send(200, deleted)

    def do_GET(self) -> None:
        url = urlparse(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        verb = "watch" if _true(query.get("watch")) else None
        if match := _TFJOBS.match(url.path):
            if not self._authorised(tfjob.GROUP, tfjob.PLURAL, verb or
                                    ("get" if match[2] else "list")):
                return
            job = self.cluster.job(match[1], match[2] or "")
            if not match[2] or job is None:
                return self._send(404, status(404, "NotFound",
                                              f'tfjobs.kubeflow.org "{match[2]}" not found'))
            with self.cluster.lock:
                return self._send(200, job.to_object())
        if match := _PODS.match(url.path):
            namespace, name, log = match[1], match[2], match[3]
            if log:
                if self._authorised("", "pods/log", "get"):
                    self._log(namespace, name, query)
                return
            if not self._authorised("", "pods", verb or ("get" if name else "list")):
                return
            pods = [pod for _, pod in self.cluster.replica_pods(namespace)]
            with self.cluster.lock:
                pods += [copy.deepcopy(p) for (ns, _), p in self.cluster.pods.items()
                         if ns == namespace]
            if name:
                found = [p for p in pods if p["metadata"]["name"] == name]
                if not found:
                    return self._send(404, status(404, "NotFound", f'pods "{name}" not found'))
                return self._send(200, found[0])
            selector = dict(term.split("=", 1) for term in
                            filter(None, query.get("labelSelector", "").split(",")))
            items = [p for p in pods if all(p["metadata"].get("labels", {}).get(k) == v
                                            for k, v in selector.items())]
            return self._send(200, {"kind": "PodList", "apiVersion": "v1",
                                    "metadata": {}, "items": items})
        self._send(404, status(404, "NotFound", f"no route {url.path}"))

    def _log(self, namespace: str, name: str, query: dict[str, str]) -> None:
        replica = self.cluster.find_replica(namespace, name)
        if replica is None:
            return self._send(404, status(404, "NotFound", f'pods "{name}" not found'))
        if query.get("container", tfjob.CONTAINER_NAME) != tfjob.CONTAINER_NAME:
            return self._send(400, status(400, "BadRequest", "no such container"))
        runs = replica.runs[:-1] if _true(query.get("previous")) else replica.runs
        if not runs:
            return self._send(400, status(400, "BadRequest", f'previous terminated container '
                                          f'"{tfjob.CONTAINER_NAME}" in pod "{name}" not found'))
        container = runs[-1]
        if not _true(query.get("follow")):
            with open(container.log_path, "rb") as f:
                lines = f.read().decode(errors="replace").splitlines(keepends=True)
            tail = int(query["tailLines"]) if "tailLines" in query else None
            return self._send(200, "".join(lines[-tail:] if tail else lines), "text/plain")
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            with open(container.log_path, "rb") as f:
                while True:
                    done = container.poll() is not None or replica.deleted
                    chunk = f.read(65536)
                    if chunk:
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                        self.wfile.flush()
                    elif done:
                        break
                    else:
                        time.sleep(0.05)
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass
        with self.cluster.lock:
            self.cluster.requests.append((self.command, self.path, 200))


def _true(value: Optional[str]) -> bool:
    return (value or "").lower() == "true"
