"""The Trainer step's launcher pod: runs the step as a TFJob and waits for it, like a good client.

KFP starts the compiled Trainer step (trainer_workers > 1) as

    python -m siamese_tfx.kubeflow.launcher --config <LauncherConfig JSON> -- <the step's args>

where the args are what TFX's container would have received (`--executor_class_path ...
--json_serialized_invocation_args <ExecutorInput> ...`, KFP having replaced `{{$}}` with the
step's ExecutorInput). The launcher then

1. names the job deterministically from the step's output URIs (the same run and task give the
   same name), so a retried or restarted launcher re-attaches to its job instead of creating a
   second one (a job of that name that already failed is a previous attempt: it is deleted and
   the job created again);
2. creates the TFJob (`kubeflow/tfjob.py`): every replica runs the step's own command and args,
   the ExecutorInput's `outputs.outputFile` pointing the chief at shared storage and the workers
   at a file in their pod; the job is owned by the object that owns the launcher pod (the run's
   Argo Workflow), so deleting the run deletes the job, and a SIGTERM (the run cancelled)
   deletes it too;
3. streams the chief's log into the step's log and waits for `Succeeded` or `Failed`;
4. on success copies the chief's ExecutorOutput to the step's own output file, which KFP reads;
   on failure exits non-zero with the job's failure message and each failed replica's exit code
   and last log lines.

It talks to the API server with the `kubernetes` client (CustomObjectsApi, CoreV1Api) and needs
the Role in `kubeflow/rbac.yaml`. Outside a cluster it uses the kubeconfig ($KUBECONFIG).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, Sequence, TypeVar

from siamese_tfx.kubeflow import tfjob
from siamese_tfx.kubeflow.tfjob import LauncherConfig

T = TypeVar("T")

INVOCATION_FLAG = "--json_serialized_invocation_args"
# The chief's ExecutorOutput goes beside its training logs (on the pipeline root, which every
# pod reaches); the workers' stays in their pods.
CHIEF_OUTPUT_ARTIFACT = "model_run"
CHIEF_OUTPUT = ".tfjob/executor_output.json"
WORKER_OUTPUT = "/tmp/siamese-tfx-tfjob/executor_output.json"
SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
TRANSIENT_STATUSES = (0, 408, 429, 500, 502, 503, 504)  # 0: no HTTP answer at all.
API_RETRY_SECONDS = 300.0
REQUEST_TIMEOUT = 60.0  # Seconds per API call (a hung connection is retried like an error).
LOG_TAIL_LINES = 20
EXIT_FAILED, EXIT_CANCELLED = 1, 143


class LaunchError(Exception):
    """The step fails with this message."""


class Cancelled(BaseException):
    """SIGTERM or SIGINT arrived (the run was cancelled or the pod is being deleted)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def say(message: str) -> None:
    print(f"[launcher] {message}", flush=True)


@dataclass(frozen=True)
class PodInfo:
    """What the launcher learns from its own pod (all empty outside KFP)."""

    owner: Optional[dict[str, str]] = None
    service_account: str = ""
    run_id: str = ""


class Kube:
    """The few API calls the launcher makes, each retried on transient errors."""

    def __init__(self, api_client: Any, retry_seconds: float = API_RETRY_SECONDS):
        from kubernetes import client

        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)
        self.retry_seconds = retry_seconds

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        from kubernetes.client.rest import ApiException
        from urllib3.exceptions import HTTPError

        deadline, pause = time.monotonic() + self.retry_seconds, 1.0
        while True:
            try:
                return fn()
            except (ApiException, HTTPError) as e:
                status = getattr(e, "status", 0) or 0
                if status not in TRANSIENT_STATUSES or time.monotonic() > deadline:
                    raise
                say(f"{what}: {status or type(e).__name__}, retrying in {pause:.0f}s")
                time.sleep(pause)
                pause = min(pause * 2, 30.0)

    def create_job(self, namespace: str, job: dict[str, Any]) -> dict[str, Any]:
        return self._call("create TFJob", lambda: self.custom.create_namespaced_custom_object(
            tfjob.GROUP, tfjob.VERSION, namespace, tfjob.PLURAL, job,
            _request_timeout=REQUEST_TIMEOUT))

    def get_job(self, namespace: str, name: str) -> Optional[dict[str, Any]]:
        from kubernetes.client.rest import ApiException

        try:
            return self._call("read TFJob", lambda: self.custom.get_namespaced_custom_object(
                tfjob.GROUP, tfjob.VERSION, namespace, tfjob.PLURAL, name,
                _request_timeout=REQUEST_TIMEOUT))
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def delete_job(self, namespace: str, name: str) -> bool:
        """Deletes the job and (foreground) its pods; False if it was not there."""
        from kubernetes.client.rest import ApiException

        try:
            self._call("delete TFJob", lambda: self.custom.delete_namespaced_custom_object(
                tfjob.GROUP, tfjob.VERSION, namespace, tfjob.PLURAL, name,
                propagation_policy="Foreground", _request_timeout=REQUEST_TIMEOUT))
            return True
        except ApiException as e:
            if e.status == 404:
                return False
            raise

    def job_pods(self, namespace: str, name: str, replica_type: str = "") -> list[Any]:
        selector = f"{tfjob.JOB_NAME_LABEL}={name}"
        if replica_type:
            selector += f",{tfjob.REPLICA_TYPE_LABEL}={replica_type.lower()}"
        pods = self._call("list pods", lambda: self.core.list_namespaced_pod(
            namespace, label_selector=selector, _request_timeout=REQUEST_TIMEOUT))
        return sorted(pods.items, key=lambda p: p.metadata.name)

    def read_pod(self, namespace: str, name: str) -> Any:
        return self._call("read pod", lambda: self.core.read_namespaced_pod(
            name, namespace, _request_timeout=REQUEST_TIMEOUT))

    def follow_log(self, namespace: str, pod: str) -> Iterator[bytes]:
        response = self.core.read_namespaced_pod_log(
            pod, namespace, container=tfjob.CONTAINER_NAME, follow=True, _preload_content=False)
        try:
            yield from response.stream(amt=65536, decode_content=False)
        finally:
            response.release_conn()

    def log_tail(self, namespace: str, pod: str, lines: int, previous: bool) -> str:
        return self._call("read log", lambda: self.core.read_namespaced_pod_log(
            pod, namespace, container=tfjob.CONTAINER_NAME, tail_lines=lines,
            previous=previous, _request_timeout=REQUEST_TIMEOUT))


def api_client() -> Any:
    """In a pod: its service account; elsewhere: the kubeconfig ($KUBECONFIG)."""
    from kubernetes import client, config

    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config()
    else:
        config.load_kube_config()
    return client.ApiClient()


def current_namespace(configured: str) -> str:
    """`configured`, else the pod's namespace, else the kubeconfig context's, else default."""
    if configured:
        return configured
    if os.path.exists(SERVICE_ACCOUNT_NAMESPACE):
        with open(SERVICE_ACCOUNT_NAMESPACE) as f:
            return f.read().strip()
    try:
        from kubernetes import config

        _, context = config.list_kube_config_contexts()
        return context.get("context", {}).get("namespace") or "default"
    except Exception:  # No kubeconfig either: the API calls will say so.
        return "default"


def pod_info(kube: Kube, namespace: str) -> PodInfo:
    """The launcher pod's owner (the run's Workflow; the pod itself if it has none), service
    account and KFP run id. KFP sets KFP_POD_NAME/KFP_POD_UID on the step's container."""
    from kubernetes.client.rest import ApiException

    name, uid = os.environ.get("KFP_POD_NAME", ""), os.environ.get("KFP_POD_UID", "")
    if not name:
        say("KFP_POD_NAME is not set: the TFJob gets no owner (SIGTERM still deletes it)")
        return PodInfo()
    fallback = {"apiVersion": "v1", "kind": "Pod", "name": name, "uid": uid} if uid else None
    try:
        pod = kube.read_pod(namespace, name)
    except ApiException as e:
        say(f"cannot read pod {namespace}/{name} ({e.status} {e.reason}): the TFJob is owned by "
            "the pod itself")
        return PodInfo(owner=fallback)
    owner = next(({"apiVersion": r.api_version, "kind": r.kind, "name": r.name, "uid": r.uid}
                  for r in pod.metadata.owner_references or [] if r.controller), None)
    owner = owner or {"apiVersion": "v1", "kind": "Pod", "name": pod.metadata.name,
                      "uid": pod.metadata.uid}
    return PodInfo(owner=owner, service_account=pod.spec.service_account_name or "",
                   run_id=(pod.metadata.labels or {}).get(tfjob.RUN_ID_LABEL, ""))


def invocation(args: Sequence[str]) -> tuple[int, dict[str, Any]]:
    """(position, parsed ExecutorInput) of the step's --json_serialized_invocation_args."""
    for i, arg in enumerate(args):
        if arg == INVOCATION_FLAG and i + 1 < len(args):
            return i + 1, json.loads(args[i + 1])
        if arg.startswith(INVOCATION_FLAG + "="):
            raise LaunchError(f"{INVOCATION_FLAG}=... is not supported; pass it as two args")
    raise LaunchError(f"the step's args have no {INVOCATION_FLAG} (the ExecutorInput)")


def output_uris(executor_input: dict[str, Any]) -> dict[str, str]:
    artifacts = executor_input.get("outputs", {}).get("artifacts", {})
    return {key: value["artifacts"][0]["uri"] for key, value in sorted(artifacts.items())}


def with_output_file(args: Sequence[str], position: int, executor_input: dict[str, Any],
                     output_file: str) -> list[str]:
    """`args` with the ExecutorInput's outputs.outputFile set to `output_file`."""
    edited = json.loads(json.dumps(executor_input))
    edited.setdefault("outputs", {})["outputFile"] = output_file
    result = list(args)
    result[position] = json.dumps(edited, sort_keys=True)
    return result


def copy_file(source: str, destination: str) -> None:
    """Local paths with the standard library; URIs (gs://, s3://) through TFX's fileio."""
    if "://" not in source and "://" not in destination:
        os.makedirs(os.path.dirname(os.path.abspath(destination)), exist_ok=True)
        shutil.copyfile(source, destination)
        return
    from tfx.dsl.io import fileio

    fileio.makedirs(os.path.dirname(destination))
    fileio.copy(source, destination, overwrite=True)


def condition(job: dict[str, Any], kind: str) -> Optional[dict[str, Any]]:
    for c in job.get("status", {}).get("conditions", []) or []:
        if c.get("type") == kind and c.get("status") == "True":
            return c
    return None


def is_finished(job: dict[str, Any]) -> bool:
    return bool(condition(job, "Succeeded") or condition(job, "Failed"))


class ChiefLog(threading.Thread):
    """Copies the chief's log into the step's log, each line prefixed with its pod; follows a
    new container after a restart."""

    def __init__(self, kube: Kube, namespace: str, job: str, out: Any = None):
        super().__init__(name="chief-log", daemon=True)
        self.kube, self.namespace, self.job = kube, namespace, job
        self.out = out or sys.stdout
        self.finished = threading.Event()  # Set by the launcher once the job has ended.

    def run(self) -> None:
        streamed: set[tuple[str, int]] = set()
        reported: set[str] = set()
        while True:
            key = None
            try:
                pod = next(iter(self.kube.job_pods(self.namespace, self.job, tfjob.CHIEF)), None)
                key = self._container(pod)
                if key and key not in streamed:
                    streamed.add(key)
                    self._stream(pod.metadata.name)
                    continue
            except Exception as e:  # A log line lost must never fail the step.
                if key:
                    streamed.discard(key)  # e.g. 400 while the container is starting.
                problem = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                if problem not in reported:  # Once each, not every second.
                    reported.add(problem)
                    say(f"chief log: {problem} (retrying)")
            if self.finished.wait(1.0):
                return

    @staticmethod
    def _container(pod: Any) -> Optional[tuple[str, int]]:
        """(pod uid, restarts) once the chief's container has started, else None."""
        if pod is None or pod.status is None or pod.status.phase == "Pending":
            return None
        statuses = [s for s in pod.status.container_statuses or []
                    if s.name == tfjob.CONTAINER_NAME]
        restarts = statuses[0].restart_count if statuses else 0
        return pod.metadata.uid, restarts

    def _stream(self, pod: str) -> None:
        pending = b""
        for chunk in self.kube.follow_log(self.namespace, pod):
            lines = (pending + chunk).split(b"\n")
            pending = lines.pop()
            for line in lines:
                self.out.write(f"[{pod}] {line.decode(errors='replace')}\n")
            self.out.flush()
        if pending:
            self.out.write(f"[{pod}] {pending.decode(errors='replace')}\n")
            self.out.flush()


class Launcher:
    """One TFJob for one step: create or re-attach, wait, report (see the module doc)."""

    def __init__(self, config: LauncherConfig, args: Sequence[str], kube: Kube,
                 log_kube: Optional[Kube] = None):
        self.config, self.args, self.kube = config, list(args), kube
        self.log_kube = log_kube or kube
        self.position, self.executor_input = invocation(self.args)
        uris = output_uris(self.executor_input)
        if CHIEF_OUTPUT_ARTIFACT not in uris:
            raise LaunchError(f"the step has no {CHIEF_OUTPUT_ARTIFACT!r} output artifact "
                              f"(outputs: {sorted(uris)})")
        self.identity = ",".join(uris.values())
        self.name = tfjob.job_name(config.component, self.identity)
        self.namespace = current_namespace(config.namespace)
        self.chief_output = f"{uris[CHIEF_OUTPUT_ARTIFACT].rstrip('/')}/{CHIEF_OUTPUT}"
        self.output_file = self.executor_input.get("outputs", {}).get("outputFile", "")
        self.where = f"TFJob {self.namespace}/{self.name}"

    def manifest(self, info: PodInfo) -> dict[str, Any]:
        config = self.config
        if info.service_account and not config.service_account:
            config = dataclasses.replace(config, service_account=info.service_account)
        args = {tfjob.CHIEF: with_output_file(self.args, self.position, self.executor_input,
                                              self.chief_output),
                tfjob.WORKER: with_output_file(self.args, self.position, self.executor_input,
                                               WORKER_OUTPUT)}
        labels = {tfjob.RUN_ID_LABEL: info.run_id} if info.run_id else {}
        job = tfjob.build_tfjob(config, self.name, self.namespace, args, self.identity,
                                owner=info.owner, labels=labels)
        tfjob.raise_for_tfjob(job)
        return job

    def run(self) -> int:
        """Exit code of the step: 0 when the job succeeded, else non-zero (message printed)."""
        previous = {s: signal.signal(s, _raise_cancelled) for s in (signal.SIGTERM, signal.SIGINT)}
        follower: Optional[ChiefLog] = None
        try:
            self.create_or_attach()
            follower = ChiefLog(self.log_kube, self.namespace, self.name)
            follower.start()
            job = self.wait()
            follower.finished.set()
            follower.join(timeout=30)
            return self.finish(job)
        except Cancelled as e:
            for s in previous:  # A second signal must not interrupt the clean-up.
                signal.signal(s, signal.SIG_IGN)
            deleted = self.kube.delete_job(self.namespace, self.name)
            say(f"{e}: the step is cancelled; "
                + (f"deleted {self.where} and its pods" if deleted else f"{self.where} is gone"))
            return EXIT_CANCELLED
        except LaunchError as e:
            print(f"[launcher] error: {e}", file=sys.stderr, flush=True)
            return EXIT_FAILED
        finally:
            if follower:
                follower.finished.set()
            for s, handler in previous.items():
                signal.signal(s, handler)

    def create_or_attach(self) -> None:
        from kubernetes.client.rest import ApiException

        info = pod_info(self.kube, self.namespace)
        job = self.manifest(info)
        replicas = {k: v["replicas"] for k, v in job["spec"]["tfReplicaSpecs"].items()}
        for attempt in range(2):
            try:
                self.kube.create_job(self.namespace, job)
                say(f"created {self.where}: {replicas}, owner "
                    + (f"{info.owner['kind']} {info.owner['name']}" if info.owner else "none"))
                return
            except ApiException as e:
                if e.status == 422:
                    raise LaunchError(f"the API server refused {self.where}: "
                                      f"{_api_message(e)}") from None
                if e.status != 409 or attempt:
                    raise
            existing = self.kube.get_job(self.namespace, self.name)
            if existing is None:
                continue  # Deleted meanwhile: create it again.
            theirs = existing.get("metadata", {}).get("annotations", {}).get(
                tfjob.OUTPUT_ANNOTATION)
            if theirs != self.identity:
                raise LaunchError(f"{self.where} exists but trains {theirs!r}, not this step's "
                                  f"{self.identity!r}")
            failed = condition(existing, "Failed")
            if not failed and not existing["metadata"].get("deletionTimestamp"):
                say(f"re-attached to {self.where} (created "
                    f"{existing['metadata'].get('creationTimestamp', '?')}): a previous "
                    "launcher of this step started it")
                return
            say(f"{self.where} is a previous attempt that "
                + (f"failed ({failed.get('message', '')})" if failed else "is being deleted")
                + ": deleting it and starting again")
            self.kube.delete_job(self.namespace, self.name)
            self._wait_gone()
        raise LaunchError(f"could not create {self.where}")

    def _wait_gone(self, timeout: float = 600.0) -> None:
        deadline = time.monotonic() + timeout
        while self.kube.get_job(self.namespace, self.name) is not None:
            if time.monotonic() > deadline:
                raise LaunchError(f"{self.where} was not deleted within {timeout:.0f}s")
            time.sleep(min(self.config.poll_seconds, 2.0))

    def wait(self) -> dict[str, Any]:
        """Polls the job until it has finished, reporting each new condition."""
        seen: set[tuple[str, str]] = set()
        while True:
            job = self.kube.get_job(self.namespace, self.name)
            if job is None:
                raise LaunchError(f"{self.where} was deleted before it finished")
            for c in job.get("status", {}).get("conditions", []) or []:
                key = (c.get("type", ""), c.get("lastTransitionTime", c.get("message", "")))
                if c.get("status") == "True" and key not in seen:
                    seen.add(key)
                    say(f"{self.where}: {c.get('type')}: {c.get('message', '')}")
            if is_finished(job):
                return job
            time.sleep(self.config.poll_seconds)

    def finish(self, job: dict[str, Any]) -> int:
        failed = condition(job, "Failed")
        if failed:
            details = self.failed_replicas()
            raise LaunchError(f"{self.where} failed ({failed.get('reason', 'Failed')}): "
                              f"{failed.get('message', '')}"
                              + "".join(f"\n  {line}" for line in details))
        if self.output_file:
            try:
                copy_file(self.chief_output, self.output_file)
            except Exception as e:
                raise LaunchError(f"{self.where} succeeded but the chief's ExecutorOutput "
                                  f"{self.chief_output} cannot be read: {e}") from None
        say(f"{self.where} succeeded; the chief's output is the step's")
        return 0

    def failed_replicas(self) -> list[str]:
        """One line per replica container that exited non-zero, with its last log lines
        printed to the step's log."""
        lines = []
        try:
            pods = self.kube.job_pods(self.namespace, self.name)
        except Exception as e:
            return [f"(cannot list the job's pods: {e})"]
        for pod in pods:
            for status in (pod.status.container_statuses or []) if pod.status else []:
                if status.name != tfjob.CONTAINER_NAME:
                    continue
                for previous, state in ((False, status.state), (True, status.last_state)):
                    terminated = state.terminated if state else None
                    if not terminated or not terminated.exit_code:
                        continue
                    lines.append(f"{pod.metadata.name}: exit code {terminated.exit_code}"
                                 + (f" ({terminated.reason})" if terminated.reason else ""))
                    self._print_tail(pod.metadata.name, previous)
                    break
        return lines

    def _print_tail(self, pod: str, previous: bool) -> None:
        try:
            tail = self.kube.log_tail(self.namespace, pod, LOG_TAIL_LINES, previous)
        except Exception as e:
            say(f"cannot read the log of {pod}: {e}")
            return
        say(f"last {LOG_TAIL_LINES} log lines of {pod}:")
        for line in (tail or "").splitlines():
            print(f"[{pod}] {line}", flush=True)


def _api_message(e: Any) -> str:
    try:
        return json.loads(e.body).get("message", e.body)
    except (TypeError, ValueError):
        return str(e.body or e.reason)


def _raise_cancelled(signum: int, frame: Any) -> None:  # Python calls this on the signal.
    raise Cancelled(signum)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the compiled Trainer step (see the module doc)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        print("usage: python -m siamese_tfx.kubeflow.launcher --config JSON -- STEP_ARGS...",
              file=sys.stderr)
        return 2
    split = argv.index("--")
    parser = argparse.ArgumentParser(prog="python -m siamese_tfx.kubeflow.launcher",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True,
                        help="LauncherConfig as JSON (written by `siamese-tfx kubeflow compile`)")
    options = parser.parse_args(argv[:split])
    try:
        config = LauncherConfig.from_json(options.config)
        client = api_client()
        launcher = Launcher(config, argv[split + 1:], Kube(client), Kube(api_client()))
    except (LaunchError, ValueError) as e:
        print(f"[launcher] error: {e}", file=sys.stderr, flush=True)
        return EXIT_FAILED
    return launcher.run()


if __name__ == "__main__":
    sys.exit(main())
