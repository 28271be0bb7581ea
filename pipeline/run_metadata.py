"""The one reader of a run in ML Metadata: which components ran, in what state, for how long, and
which artifacts each one output. The run summary (`summary.py`) and the data report
(`data_report.py`) both read runs through it; what an artifact holds is each component's own
business (its executor's public readers)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

_STATES = metadata_store_pb2.Execution.State
# What an execution produced: its outputs, and what a resolver resolved (recorded as internal
# outputs).
_OUTPUT_EVENTS = (metadata_store_pb2.Event.OUTPUT, metadata_store_pb2.Event.DECLARED_OUTPUT,
                  metadata_store_pb2.Event.INTERNAL_OUTPUT)


@dataclass
class NodeRun:
    """One component's execution in a run."""

    component: str  # the component id, e.g. "Trainer"
    execution: metadata_store_pb2.Execution
    outputs: list[metadata_store_pb2.Artifact]

    @property
    def state(self) -> str:  # COMPLETE, CACHED, FAILED, ...
        return _STATES.Name(self.execution.last_known_state)

    @property
    def seconds(self) -> float:
        return (self.execution.last_update_time_since_epoch
                - self.execution.create_time_since_epoch) / 1000.0


@dataclass
class RunRecord:
    """A pipeline run as ML Metadata holds it."""

    run_id: str
    nodes: dict[str, NodeRun]  # by component id

    def pipeline_roots(self) -> list[str]:
        """The pipeline roots the run's artifacts live under (<root>/<component>/<key>/<id>):
        where components that stopped the run keep their reports."""
        roots = []
        for node in self.nodes.values():
            for artifact in node.outputs:
                root = os.path.dirname(os.path.dirname(os.path.dirname(artifact.uri)))
                if root not in roots:
                    roots.append(root)
        return roots


def sqlite_connection(path: str, read_only: bool = False) -> metadata_store_pb2.ConnectionConfig:
    """The connection to an ML Metadata SQLite file (read-only: never creates or migrates it)."""
    mode = metadata_store_pb2.SqliteMetadataSourceConfig
    return metadata_store_pb2.ConnectionConfig(sqlite=mode(
        filename_uri=path, connection_mode=mode.READONLY if read_only else mode.READWRITE_OPENCREATE))


def read_run(connection_config: metadata_store_pb2.ConnectionConfig,
             pipeline_name: Optional[str] = None, run_id: Optional[str] = None) -> RunRecord:
    """Run `run_id`, or the latest run (of `pipeline_name` when given, else of any pipeline)."""
    store = metadata_store.MetadataStore(connection_config)
    if run_id:
        ctx = store.get_context_by_type_and_name("pipeline_run", run_id)
        if ctx is None:
            raise LookupError(f"no run {run_id!r} in ML Metadata")
    else:
        ctx = _latest_run(store, pipeline_name)
    nodes = {}
    for execution in store.get_executions_by_context(ctx.id):
        node = [c.name for c in store.get_contexts_by_execution(execution.id) if c.type == "node"]
        name = node[0].split(".", 1)[-1] if node else execution.name
        nodes[name] = NodeRun(name, execution, _outputs(store, execution.id))
    return RunRecord(ctx.name, nodes)


def _latest_run(store: metadata_store.MetadataStore, pipeline_name: Optional[str]):
    runs = store.get_contexts_by_type("pipeline_run")
    if not runs:
        raise LookupError("ML Metadata holds no pipeline run")
    if pipeline_name:
        pipeline_ctx = store.get_context_by_type_and_name("pipeline", pipeline_name)
        if pipeline_ctx is None:
            raise LookupError(f"no run of pipeline {pipeline_name!r} in ML Metadata")
        in_pipeline = {c.id for c in store.get_children_contexts_by_context(pipeline_ctx.id)}
        runs = [r for r in runs if r.id in in_pipeline] or runs
    return max(runs, key=lambda c: (c.create_time_since_epoch, c.id))


def _outputs(store: metadata_store.MetadataStore, execution_id: int):
    events = store.get_events_by_execution_ids([execution_id])
    ids = [e.artifact_id for e in events if e.type in _OUTPUT_EVENTS]
    return list(store.get_artifacts_by_id(ids)) if ids else []
