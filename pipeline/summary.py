"""What a run did, read back from ML Metadata: per-component state and wall time, quarantined
inputs, data anomalies (and whether the run overrode them), the Evaluator's metrics and verdict,
and where (or why not) the model was pushed."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Optional

from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

from siamese_tfx.pipeline import pipeline as pipeline_lib

_STATES = metadata_store_pb2.Execution.State


@dataclass
class ComponentRun:
    component: str
    state: str  # COMPLETE, CACHED, FAILED, ...
    seconds: float


@dataclass
class RunSummary:
    run_id: str
    components: list[ComponentRun] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    blessed: Optional[bool] = None
    infra_blessed: Optional[bool] = None  # InfraValidator's verdict
    infra_reason: str = ""  # why infra validation failed
    infra_checks: Optional[int] = None  # requests checked through the serving stack
    pushed_path: Optional[str] = None
    not_pushed_reason: str = ""
    quarantined: Optional[int] = None
    anomalies: list[str] = field(default_factory=list)  # The data validation gate's, one a line.
    anomalies_overridden: bool = False
    artifacts: dict[str, list[str]] = field(default_factory=dict)  # component -> output URIs
    model_description: str = ""  # the Trainer's parameter counts and weight sharing, one line

    @property
    def total_seconds(self) -> float:
        return sum(c.seconds for c in self.components)

    def format(self) -> str:
        lines = [f"Run {self.run_id}", "  component                        state      seconds"]
        for c in self.components:
            lines.append(f"  {c.component:<32} {c.state:<10} {c.seconds:8.1f}")
        lines.append(f"  {'total':<32} {'':<10} {self.total_seconds:8.1f}")
        trainer = sum(c.seconds for c in self.components if c.component == pipeline_lib.TRAINER)
        if self.total_seconds > 0 and trainer:
            lines.append(f"  (Trainer: {trainer:.1f}s, {100 * trainer / self.total_seconds:.0f}%"
                         " of the total)")
        if self.quarantined is not None:
            lines.append(f"Quarantined inputs: {self.quarantined}")
        if self.anomalies:
            verdict = ("overridden by --allow-anomalies, the run trained on this data"
                       if self.anomalies_overridden else "the run stopped before Transform")
            lines.append(f"Data anomalies: {len(self.anomalies)} ({verdict})")
            lines.extend(f"  - {line}" for line in self.anomalies)
        elif any(c.component == pipeline_lib.VALIDATION_GATE and c.state in ("COMPLETE", "CACHED")
                 for c in self.components):
            lines.append("Data anomalies: none")
        if self.model_description:
            lines.append(self.model_description)
        if self.metrics:
            lines.append("Evaluator metrics (eval split): " + ", ".join(
                f"{k}={v:.4f}" for k, v in sorted(self.metrics.items())))
        if self.infra_blessed is not None:
            lines.append(
                f"Infra validation: passed ({self.infra_checks} requests answered through a "
                "model server process as in-process)" if self.infra_blessed
                else f"Infra validation: FAILED: {self.infra_reason}")
        if self.pushed_path:
            lines.append(f"Pushed model: {self.pushed_path}")
        else:
            lines.append(f"Nothing pushed: {self.not_pushed_reason or 'the run did not finish'}")
        return "\n".join(lines)

    def to_json(self) -> str:
        data = {k: v for k, v in self.__dict__.items() if k != "components"}
        data["components"] = [c.__dict__ for c in self.components]
        data["total_seconds"] = self.total_seconds
        return json.dumps(data, indent=1)


def _latest_run_context(store: metadata_store.MetadataStore, pipeline_name: str):
    runs = store.get_contexts_by_type("pipeline_run")
    pipeline_ctx = store.get_context_by_type_and_name("pipeline", pipeline_name)
    if pipeline_ctx is None or not runs:
        raise LookupError(f"no run of pipeline {pipeline_name!r} in ML Metadata")
    in_pipeline = {c.id for c in store.get_children_contexts_by_context(pipeline_ctx.id)}
    candidates = [r for r in runs if r.id in in_pipeline] or runs
    return max(candidates, key=lambda c: (c.create_time_since_epoch, c.id))


def summarize(
    connection_config: metadata_store_pb2.ConnectionConfig,
    pipeline_name: str,
    run_id: Optional[str] = None,
) -> RunSummary:
    """Summarises run `run_id` (default: the latest) of `pipeline_name`."""
    store = metadata_store.MetadataStore(connection_config)
    ctx = (store.get_context_by_type_and_name("pipeline_run", run_id) if run_id
           else _latest_run_context(store, pipeline_name))
    if ctx is None:
        raise LookupError(f"no run {run_id!r} in ML Metadata")
    summary = RunSummary(run_id=ctx.name)
    by_component: dict[str, metadata_store_pb2.Execution] = {}
    for execution in store.get_executions_by_context(ctx.id):
        node = [c.name for c in store.get_contexts_by_execution(execution.id)
                if c.type == "node"]
        name = node[0].split(".", 1)[-1] if node else execution.name
        by_component[name] = execution
    order = {n: i for i, n in enumerate(pipeline_lib.COMPONENT_ORDER)}
    for name, execution in sorted(by_component.items(), key=lambda kv: order.get(kv[0], 99)):
        seconds = (execution.last_update_time_since_epoch
                   - execution.create_time_since_epoch) / 1000.0
        state = _STATES.Name(execution.last_known_state)
        summary.components.append(ComponentRun(name, state, seconds))
        outputs = _outputs(store, execution.id)
        summary.artifacts[name] = [a.uri for a in outputs]
        if name == pipeline_lib.EXAMPLE_GEN:
            for a in outputs:
                if "quarantined" in a.custom_properties:
                    summary.quarantined = a.custom_properties["quarantined"].int_value
        elif name == pipeline_lib.VALIDATION_GATE:
            _read_gate(summary, outputs, execution)
        elif name == pipeline_lib.TRAINER:
            summary.model_description = _read_model_description(outputs)
        elif name == pipeline_lib.EVALUATOR:
            _read_evaluation(summary, outputs)
        elif name == pipeline_lib.INFRA_VALIDATOR:
            _read_infra_validation(summary, outputs)
        elif name == pipeline_lib.PUSHER:
            for a in outputs:
                if a.custom_properties.get("pushed") and a.custom_properties["pushed"].int_value:
                    summary.pushed_path = a.custom_properties["pushed_destination"].string_value
    if summary.pushed_path is None and summary.infra_blessed is False:
        summary.not_pushed_reason = "; ".join(
            r for r in (summary.not_pushed_reason,
                        f"infra validation failed: {summary.infra_reason}") if r)
    if summary.pushed_path is None and not summary.not_pushed_reason:
        failed = [c.component for c in summary.components if c.state == "FAILED"]
        if failed:
            summary.not_pushed_reason = f"{', '.join(failed)} failed"
        elif pipeline_lib.PUSHER not in by_component:
            summary.not_pushed_reason = "the run stopped before Pusher"
    return summary


def _outputs(store: metadata_store.MetadataStore, execution_id: int):
    events = store.get_events_by_execution_ids([execution_id])
    # A resolver records what it resolved as internal outputs.
    ids = [e.artifact_id for e in events if e.type in (metadata_store_pb2.Event.OUTPUT,
                                                        metadata_store_pb2.Event.DECLARED_OUTPUT,
                                                        metadata_store_pb2.Event.INTERNAL_OUTPUT)]
    return store.get_artifacts_by_id(ids) if ids else []


def _read_gate(summary: RunSummary, outputs, execution) -> None:
    for a in outputs:
        if "anomalies" in a.custom_properties:
            lines = a.custom_properties["anomaly_lines"].string_value
            summary.anomalies = [line for line in lines.splitlines() if line]
            summary.anomalies_overridden = bool(a.custom_properties["overridden"].int_value)
    if execution.last_known_state == _STATES.FAILED:
        # A stopped gate publishes nothing; it keeps its verdict next to its output folder.
        from siamese_tfx.components.validation_gate import executor as gate_lib

        for uris in summary.artifacts.values():
            for uri in uris:
                root = os.path.dirname(os.path.dirname(os.path.dirname(uri)))
                path = os.path.join(
                    gate_lib.stopped_result_dir(os.path.join(
                        root, pipeline_lib.VALIDATION_GATE, gate_lib.RESULT_KEY,
                        str(execution.id))),
                    gate_lib.RESULT_JSON)
                if os.path.exists(path):
                    with open(path) as f:
                        summary.anomalies = gate_lib.Verdict.from_json(f.read()).lines()
                    return


def _read_model_description(outputs) -> str:
    """The Trainer's one-line description of its network, from its model run output."""
    from siamese_tfx.components.trainer import describe

    lines = [describe.summary_line(a.uri) for a in outputs]
    return next((line for line in lines if line), "")


def _read_infra_validation(summary: RunSummary, outputs) -> None:
    from siamese_tfx.components.infra_validator import executor as infra_lib

    for a in outputs:
        if infra_lib.BLESSED_PROPERTY in a.custom_properties:
            summary.infra_blessed = bool(
                a.custom_properties[infra_lib.BLESSED_PROPERTY].int_value)
            summary.infra_reason = a.custom_properties[infra_lib.REASON_PROPERTY].string_value
            report = os.path.join(a.uri, infra_lib.REPORT_JSON)
            if os.path.exists(report):
                with open(report) as f:
                    summary.infra_checks = len(json.load(f).get("checks", []))


def _read_evaluation(summary: RunSummary, outputs) -> None:
    import tensorflow_model_analysis as tfma

    for a in outputs:
        if "blessed" in a.custom_properties:  # ModelBlessing
            summary.blessed = bool(a.custom_properties["blessed"].int_value)
        elif os.path.exists(os.path.join(a.uri, "eval_config.json")):
            result = tfma.load_eval_result(a.uri)
            for _, metrics in result.slicing_metrics:
                for name, value in metrics.get("", {}).get("", {}).items():
                    if "doubleValue" in value:
                        summary.metrics[name] = float(value["doubleValue"])
            validation = tfma.load_validation_result(a.uri)
            if not validation.validation_ok:
                reasons = []
                for failure in validation.metric_validations_per_slice:
                    for f in failure.failures:
                        reasons.append(
                            f"{f.metric_key.name}={f.metric_value.double_value.value:.4f} "
                            f"fails {f.metric_threshold}".replace("\n", " ")
                        )
                summary.not_pushed_reason = (
                    "the model was not blessed: " + "; ".join(reasons or ["validation failed"])
                )
