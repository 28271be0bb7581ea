"""MirroredStrategy: one step on 2 replicas (the CPU split into 2 logical devices) moves the real
Siamese model exactly as one replica does on the same global batch."""

import json

import pytest
from distributed_fixtures import run_script

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def report():
    result = run_script("mirrored_step.py", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_two_replicas_take_the_same_step_as_one(report):
    assert report["replicas"] == [1, 2]
    assert report["global_batch"] == [8, 8]
    assert report["loss"][0] == pytest.approx(report["loss"][1], abs=TOLERANCE)
    for optimizer in ("adam", "sgd"):
        figures = report[optimizer]
        assert figures["max_weight_change"] > 50 * TOLERANCE, f"{optimizer}: no step taken"
        assert figures["max_weight_difference"] <= TOLERANCE, (optimizer, figures)


@pytest.mark.slow
def test_mixed_precision_computes_in_float16_with_float32_loss_and_outputs(report):
    mixed = report["mixed"]
    assert mixed["conv_compute_dtype"] == "float16"
    assert mixed["variable_dtype"] == "float32"
    assert mixed["output_dtype"] == "float32"
    assert mixed["optimizer"].startswith("LossScaleOptimizer")
    assert 0 < mixed["loss"] < 10
