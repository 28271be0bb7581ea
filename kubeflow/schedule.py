"""Uploads a compiled pipeline to Kubeflow Pipelines and keeps one recurring run on it.

`schedule` talks to the small part of `kfp.Client` listed in `PipelineClient`. The CLI passes a
real `kfp.Client`, or with `--dry-run` a `RecordingClient`, which records the same calls with
their arguments and answers lookups as a server holding nothing (or the state it is given).

What `schedule` sends:
1. the pipeline: `upload_pipeline` when no pipeline has that name, else `upload_pipeline_version`
   (the version is named after the spec's content hash, so scheduling an unchanged spec again
   uploads nothing);
2. the experiment: `create_experiment` (which returns the existing one of that name);
3. the recurring run: `create_recurring_run` on that version, then `delete_recurring_run` for
   every older recurring run of the same name. The KFP API cannot change a recurring run's
   version or cron, so "update" is create-new-then-delete-old, which never leaves a gap.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Optional, Protocol


class PipelineClient(Protocol):
    """The `kfp.Client` methods `schedule` uses (kfp 2.13 signatures)."""

    def get_pipeline_id(self, name: str) -> Optional[str]: ...

    def upload_pipeline(self, pipeline_package_path: str, pipeline_name: Optional[str] = None,
                        description: Optional[str] = None) -> Any: ...

    def list_pipeline_versions(self, pipeline_id: str, page_token: str = "",
                               page_size: int = 10, sort_by: str = "",
                               filter: Optional[str] = None) -> Any: ...

    def upload_pipeline_version(self, pipeline_package_path: str, pipeline_version_name: str,
                                pipeline_id: Optional[str] = None,
                                description: Optional[str] = None) -> Any: ...

    def create_experiment(self, name: str, description: Optional[str] = None,
                          namespace: Optional[str] = None) -> Any: ...

    def list_recurring_runs(self, page_token: str = "", page_size: int = 10, sort_by: str = "",
                            experiment_id: Optional[str] = None,
                            filter: Optional[str] = None) -> Any: ...

    def create_recurring_run(self, experiment_id: str, job_name: str, **kwargs: Any) -> Any: ...

    def delete_recurring_run(self, recurring_run_id: str) -> Any: ...


@dataclass(frozen=True)
class ScheduleRequest:
    """One recurring run of a compiled pipeline."""

    package_path: str
    pipeline_name: str
    cron: str
    experiment: str = "siamese-tfx"
    recurring_run_name: str = ""
    pipeline_root: str = ""
    description: str = ""
    namespace: Optional[str] = None
    service_account: Optional[str] = None
    max_concurrency: int = 1

    def run_name(self) -> str:
        return self.recurring_run_name or f"{self.pipeline_name}-scheduled"


@dataclass(frozen=True)
class ScheduleResult:
    pipeline_id: str
    version_id: str
    version_name: str
    experiment_id: str
    recurring_run_id: str
    replaced_recurring_run_ids: tuple[str, ...]


def kfp_cron(expression: str) -> str:
    """KFP's scheduler takes 6-field cron (seconds first): '0 3 * * *' -> '0 0 3 * * *'."""
    fields = expression.split()
    if len(fields) == 5:
        return " ".join(["0"] + fields)
    if len(fields) == 6:
        return " ".join(fields)
    raise ValueError(f"cron {expression!r}: expected 5 fields (minute hour day month weekday) "
                     "or KFP's 6 (with seconds first)")


def version_name(pipeline_name: str, package_path: str) -> str:
    """The pipeline version's name: the pipeline's name and the spec's content hash."""
    with open(package_path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    return f"{pipeline_name}-{digest[:12]}"


def name_filter(name: str) -> str:
    """A KFP v2beta1 API filter: display_name equals `name`."""
    return json.dumps({"predicates": [
        {"key": "display_name", "operation": "EQUALS", "string_value": name}]})


def _field(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def _paged(list_call: Any, items_field: str, **kwargs: Any) -> list[Any]:
    items, token = [], ""
    while True:
        response = list_call(page_token=token, page_size=100, **kwargs)
        items += _field(response, items_field) or []
        token = _field(response, "next_page_token") or ""
        if not token:
            return items


def schedule(client: PipelineClient, request: ScheduleRequest) -> ScheduleResult:
    """Uploads the pipeline (or a new version of it) and points one recurring run at it."""
    cron = kfp_cron(request.cron)
    version = version_name(request.pipeline_name, request.package_path)
    pipeline_id = client.get_pipeline_id(request.pipeline_name)
    if pipeline_id is None:
        pipeline = client.upload_pipeline(
            pipeline_package_path=request.package_path, pipeline_name=request.pipeline_name,
            description=request.description)
        pipeline_id = _field(pipeline, "pipeline_id")
    existing_versions = _paged(client.list_pipeline_versions, "pipeline_versions",
                               pipeline_id=pipeline_id, filter=name_filter(version))
    if existing_versions:
        version_id = _field(existing_versions[0], "pipeline_version_id")
    else:
        uploaded = client.upload_pipeline_version(
            pipeline_package_path=request.package_path, pipeline_version_name=version,
            pipeline_id=pipeline_id, description=request.description)
        version_id = _field(uploaded, "pipeline_version_id")
    experiment = client.create_experiment(name=request.experiment, namespace=request.namespace)
    experiment_id = _field(experiment, "experiment_id")
    older = _paged(client.list_recurring_runs, "recurring_runs", experiment_id=experiment_id,
                   filter=name_filter(request.run_name()))
    created = client.create_recurring_run(
        experiment_id=experiment_id,
        job_name=request.run_name(),
        description=request.description,
        cron_expression=cron,
        max_concurrency=request.max_concurrency,
        no_catchup=True,
        pipeline_id=pipeline_id,
        version_id=version_id,
        enabled=True,
        pipeline_root=request.pipeline_root or None,
        service_account=request.service_account,
    )
    replaced = tuple(_field(run, "recurring_run_id") for run in older)
    for run_id in replaced:
        client.delete_recurring_run(recurring_run_id=run_id)
    return ScheduleResult(pipeline_id, version_id, version, experiment_id,
                          _field(created, "recurring_run_id"), replaced)


@dataclass
class RecordingClient:
    """A stand-in for `kfp.Client` that records every call and answers from its own state.

    Lookups answer from `pipelines` (name -> id), `versions` (pipeline id -> {name: id}) and
    `recurring_runs` (experiment id -> {run id: name}); by default the server holds nothing.
    Writes update that state and return ids derived from the names, so a run is reproducible.
    """

    pipelines: dict[str, str] = dataclasses.field(default_factory=dict)
    versions: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)
    recurring_runs: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)
    calls: list[tuple[str, dict[str, Any]]] = dataclasses.field(default_factory=list)

    def _record(self, method: str, **kwargs: Any) -> None:
        self.calls.append((method, kwargs))

    def get_pipeline_id(self, name: str) -> Optional[str]:
        self._record("get_pipeline_id", name=name)
        return self.pipelines.get(name)

    def upload_pipeline(self, pipeline_package_path: str, pipeline_name: Optional[str] = None,
                        description: Optional[str] = None) -> dict[str, Any]:
        self._record("upload_pipeline", pipeline_package_path=pipeline_package_path,
                     pipeline_name=pipeline_name, description=description)
        pipeline_id = self.pipelines[pipeline_name] = f"pipeline:{pipeline_name}"
        return {"pipeline_id": pipeline_id}

    def list_pipeline_versions(self, pipeline_id: str, page_token: str = "",
                               page_size: int = 10, sort_by: str = "",
                               filter: Optional[str] = None) -> dict[str, Any]:
        self._record("list_pipeline_versions", pipeline_id=pipeline_id, page_token=page_token,
                     page_size=page_size, sort_by=sort_by, filter=filter)
        wanted = _filter_name(filter)
        versions = self.versions.get(pipeline_id, {})
        return {"pipeline_versions": [
            {"pipeline_version_id": vid, "display_name": name}
            for name, vid in versions.items() if wanted in (None, name)]}

    def upload_pipeline_version(self, pipeline_package_path: str, pipeline_version_name: str,
                                pipeline_id: Optional[str] = None,
                                description: Optional[str] = None) -> dict[str, Any]:
        self._record("upload_pipeline_version", pipeline_package_path=pipeline_package_path,
                     pipeline_version_name=pipeline_version_name, pipeline_id=pipeline_id,
                     description=description)
        version_id = f"version:{pipeline_version_name}"
        self.versions.setdefault(pipeline_id, {})[pipeline_version_name] = version_id
        return {"pipeline_version_id": version_id}

    def create_experiment(self, name: str, description: Optional[str] = None,
                          namespace: Optional[str] = None) -> dict[str, Any]:
        self._record("create_experiment", name=name, namespace=namespace)
        return {"experiment_id": f"experiment:{name}"}

    def list_recurring_runs(self, page_token: str = "", page_size: int = 10, sort_by: str = "",
                            experiment_id: Optional[str] = None,
                            filter: Optional[str] = None) -> dict[str, Any]:
        self._record("list_recurring_runs", page_token=page_token, page_size=page_size,
                     sort_by=sort_by, experiment_id=experiment_id, filter=filter)
        wanted = _filter_name(filter)
        runs = self.recurring_runs.get(experiment_id, {})
        return {"recurring_runs": [{"recurring_run_id": rid, "display_name": name}
                                   for rid, name in runs.items() if wanted in (None, name)]}

    def create_recurring_run(self, experiment_id: str, job_name: str,
                             **kwargs: Any) -> dict[str, Any]:
        self._record("create_recurring_run", experiment_id=experiment_id, job_name=job_name,
                     **kwargs)
        runs = self.recurring_runs.setdefault(experiment_id, {})
        run_id = f"recurring-run:{job_name}:{len(runs) + 1}"
        runs[run_id] = job_name
        return {"recurring_run_id": run_id}

    def delete_recurring_run(self, recurring_run_id: str) -> dict[str, Any]:
        self._record("delete_recurring_run", recurring_run_id=recurring_run_id)
        for runs in self.recurring_runs.values():
            runs.pop(recurring_run_id, None)
        return {}


def _filter_name(filter_json: Optional[str]) -> Optional[str]:
    if not filter_json:
        return None
    return json.loads(filter_json)["predicates"][0]["string_value"]
