"""What a run did, read back from ML Metadata: per-component state and wall time, quarantined
inputs, data anomalies (and whether the run overrode them), the Evaluator's metrics and verdict,
and where (or why not) the model was pushed."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Optional

from ml_metadata.proto import metadata_store_pb2

from siamese_tfx.pipeline import pipeline as pipeline_lib
from siamese_tfx.pipeline import run_metadata


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
    infra_signatures: list[str] = field(default_factory=list)  # what the passed checks called
    gallery: str = ""  # GalleryBuilder's gallery (identities, exemplars, fingerprint), one line
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
        if self.gallery:
            lines.append(self.gallery)
        if self.metrics:
            lines.append("Evaluator metrics (eval split): " + ", ".join(
                f"{k}={v:.4f}" for k, v in sorted(self.metrics.items())))
        if self.infra_blessed is not None:
            lines.append(
                f"Infra validation: passed ({self.infra_checks} requests answered through a "
                "model server process as in-process: "
                f"{', '.join(self.infra_signatures)})" if self.infra_blessed
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


def summarize(
    connection_config: metadata_store_pb2.ConnectionConfig,
    pipeline_name: str,
    run_id: Optional[str] = None,
) -> RunSummary:
    """Summarises run `run_id` (default: the latest) of `pipeline_name`."""
    from siamese_tfx.components.gallery_builder import executor as gallery_lib
    from siamese_tfx.components.infra_validator import executor as infra_lib
    from siamese_tfx.components.pair_example_gen import executor as example_gen_lib
    from siamese_tfx.components.validation_gate import executor as gate_lib

    run = run_metadata.read_run(connection_config, pipeline_name, run_id)
    summary = RunSummary(run_id=run.run_id)
    order = {n: i for i, n in enumerate(pipeline_lib.COMPONENT_ORDER)}
    for name, node in sorted(run.nodes.items(), key=lambda kv: order.get(kv[0], 99)):
        summary.components.append(ComponentRun(name, node.state, node.seconds))
        summary.artifacts[name] = [a.uri for a in node.outputs]
    nodes = run.nodes
    if pipeline_lib.EXAMPLE_GEN in nodes:
        summary.quarantined = example_gen_lib.quarantined_count(
            nodes[pipeline_lib.EXAMPLE_GEN].outputs)
    gate = nodes.get(pipeline_lib.VALIDATION_GATE)
    if gate is not None:
        outcome = gate_lib.read_outcome(gate.outputs, run.pipeline_roots(),
                                        pipeline_lib.VALIDATION_GATE, gate.execution.id)
        summary.anomalies, summary.anomalies_overridden = outcome.lines, outcome.overridden
    if pipeline_lib.TRAINER in nodes:
        summary.model_description = _model_description(nodes[pipeline_lib.TRAINER].outputs)
    if pipeline_lib.GALLERY_BUILDER in nodes:
        gallery = gallery_lib.read_outcome(nodes[pipeline_lib.GALLERY_BUILDER].outputs)
        summary.gallery = gallery.format() if gallery else ""
    if pipeline_lib.EVALUATOR in nodes:
        _read_evaluation(summary, nodes[pipeline_lib.EVALUATOR].outputs)
    infra = (infra_lib.read_outcome(nodes[pipeline_lib.INFRA_VALIDATOR].outputs)
             if pipeline_lib.INFRA_VALIDATOR in nodes else None)
    if infra is not None:
        summary.infra_blessed, summary.infra_reason = infra.blessed, infra.reason
        summary.infra_checks = infra.checks
        summary.infra_signatures = list(infra.signatures)
    if pipeline_lib.PUSHER in nodes:
        summary.pushed_path = _pushed_path(nodes[pipeline_lib.PUSHER].outputs)
    if summary.pushed_path is None and summary.infra_blessed is False:
        summary.not_pushed_reason = "; ".join(
            r for r in (summary.not_pushed_reason,
                        f"infra validation failed: {summary.infra_reason}") if r)
    if summary.pushed_path is None and not summary.not_pushed_reason:
        failed = [c.component for c in summary.components if c.state == "FAILED"]
        if failed:
            summary.not_pushed_reason = f"{', '.join(failed)} failed"
        elif pipeline_lib.PUSHER not in nodes:
            summary.not_pushed_reason = "the run stopped before Pusher"
    return summary


def _model_description(outputs) -> str:
    """The Trainer's one-line description of its network, from its model run output."""
    from siamese_tfx.components.trainer import describe

    lines = [describe.summary_line(a.uri) for a in outputs]
    return next((line for line in lines if line), "")


def _pushed_path(outputs) -> Optional[str]:
    """Where Pusher pushed the model (its PushedModel's custom properties), if it did."""
    for a in outputs:
        if a.custom_properties.get("pushed") and a.custom_properties["pushed"].int_value:
            return a.custom_properties["pushed_destination"].string_value
    return None


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
