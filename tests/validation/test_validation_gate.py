"""The data validation gate on hand-written example spans, with the pipeline's own validation
nodes (real StatisticsGen, ImportSchemaGen with the curated schema, ExampleValidator, the gate)
on LocalDagRunner: anomalies stop the run before Transform, an override lets it through, and a
span whose image sizes differ from the previous run's is flagged as drift."""

import json
import os

import pytest
from validation_fixtures import balanced, run_validation, states, write_span

from siamese_tfx.components.contract.config import ValidationConfig
from siamese_tfx.components.pair_example_gen import sampling
from siamese_tfx.components.validation_gate import executor as gate_lib
from siamese_tfx.pipeline import pipeline as pipeline_lib

pytestmark = [pytest.mark.slow]


def test_label_outside_0_1_stops_the_run_before_transform_naming_it(label_two_run):
    _, summary, error = label_two_run
    ran = states(summary)
    assert ran[pipeline_lib.EXAMPLE_VALIDATOR] == "COMPLETE"
    assert ran[pipeline_lib.VALIDATION_GATE] == "FAILED", ran
    assert pipeline_lib.TRANSFORM not in ran
    message = str(error)
    assert "DataAnomaliesFound" in message or "Data validation found" in message, message
    assert "[train] label (schema)" in message and "Unexpectedly large value: 2" in message
    assert "--allow-anomalies" in message
    # The summary names the anomaly too, although the failed gate published nothing.
    assert any("label" in line and "2" in line for line in summary.anomalies), summary.anomalies
    assert not summary.anomalies_overridden
    assert "Data anomalies: 1 (the run stopped before Transform)" in summary.format()


def test_override_lets_the_run_through_and_says_so(tmp_path):
    labels = {sampling.TRAIN: balanced(15) + [2] + balanced(4), sampling.EVAL: balanced(8)}
    span = write_span(str(tmp_path / "span"), labels, (16, 16))
    summary, error = run_validation(span, str(tmp_path / "run"),
                                    ValidationConfig(allow_anomalies=True), with_transform=True)
    assert error is None, error
    ran = states(summary)
    assert ran[pipeline_lib.VALIDATION_GATE] == "COMPLETE"
    assert ran[pipeline_lib.TRANSFORM] == "COMPLETE"
    assert summary.anomalies_overridden
    assert len(summary.anomalies) == 1 and "Unexpectedly large value: 2" in summary.anomalies[0]
    assert "overridden by --allow-anomalies" in summary.format()


def test_class_balance_and_split_size_are_checked(tmp_path):
    labels = {sampling.TRAIN: [1] * 9 + [0], sampling.EVAL: [1]}
    span = write_span(str(tmp_path / "span"), labels, (16, 16))
    summary, error = run_validation(span, str(tmp_path / "run"))
    assert error is not None
    message = str(error)
    assert "[train] label (class_balance): 0.900 of the pairs are positive" in message, message
    assert "[eval] (split) (split_size): the split holds 1 pair(s)" in message
    # The curated schema's dataset constraint (min_examples_count) says so too.
    assert "[eval] (split) (schema)" in message


def test_second_span_with_other_image_sizes_is_flagged_as_drift(tmp_path):
    workdir = str(tmp_path / "run")
    labels = {sampling.TRAIN: balanced(20), sampling.EVAL: balanced(8)}
    first = write_span(str(tmp_path / "span1"), labels, (16, 16), seed=1)
    summary, error = run_validation(first, workdir)
    assert error is None, error
    assert states(summary)[pipeline_lib.VALIDATION_GATE] == "COMPLETE"

    # Same sizes, other drawings: no drift.
    same = write_span(str(tmp_path / "span2"), labels, (16, 16), seed=2)
    summary, error = run_validation(same, workdir)
    assert error is None, error

    bigger = write_span(str(tmp_path / "span3"), labels, (40, 28), seed=3)
    summary, error = run_validation(bigger, workdir)
    assert error is not None
    message = str(error)
    for feature in gate_lib.IMAGE_SIZE_FEATURES:
        assert f"[train] {feature} (drift): jensen_shannon_divergence" in message, message
    assert "label (drift)" not in message  # The label distribution did not change.
    result_path = message.split("Details: ")[1].split(". `siamese-tfx")[0]
    verdict = gate_lib.Verdict.from_json(open(result_path).read())
    drift = {(m.split, m.name): m for m in verdict.measurements if "drift" in m.name}
    height = drift[("train", "left_height drift (jensen_shannon_divergence)")]
    assert height.value > height.upper == ValidationConfig().max_label_drift
    label = drift[("train", "label drift (jensen_shannon_divergence)")]
    assert label.ok and label.value < 0.01
    print(json.dumps({k[0] + "/" + k[1]: [m.value, m.upper] for k, m in drift.items()}))
    # Compared with the last accepted run (span 2), not with the stopped one.
    assert os.path.basename(verdict.previous_result).isdigit()
