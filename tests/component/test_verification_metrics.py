"""The Evaluator's verification metrics (components/metrics/verification.py): their values
against scikit-learn's ROC, and the blessing rule they add, run by TFMA itself (on Beam's
DirectRunner) with the pipeline's own EvalConfig and a baseline, as the Evaluator runs it."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_model_analysis as tfma
from sklearn.metrics import roc_curve

from siamese_tfx.components.contract import features, signatures
from siamese_tfx.components.metrics import verification
from siamese_tfx.components.trainer import calibration
from siamese_tfx.pipeline.config import PipelineConfig
from siamese_tfx.pipeline.pipeline import make_eval_config


def _rates_at(scores, labels, thresholds):
    """(FMR, FNMR) at each threshold, a pair matching when its score >= the threshold."""
    scores, labels = np.asarray(scores), np.asarray(labels).astype(bool)
    fmr = np.array([(scores[~labels] >= t).mean() for t in thresholds])
    fnmr = np.array([(scores[labels] < t).mean() for t in thresholds])
    return fmr, fnmr


def test_equal_error_rate_is_where_scikit_learns_roc_crosses_the_diagonal():
    rng = np.random.default_rng(3)
    labels = np.repeat([1, 0], 500)
    scores = 1 / (1 + np.exp(-(rng.normal(1.0, 1.0, 1000) * (2 * labels - 1))))
    fpr, tpr, _ = roc_curve(labels, scores)
    i = int(np.argmin(np.abs(fpr - (1 - tpr))))
    expected = (fpr[i] + 1 - tpr[i]) / 2
    eer = verification.equal_error_rate(*_rates_at(scores, labels, np.linspace(0, 1, 1000)))
    assert abs(eer - expected) < 0.005 and 0.1 < eer < 0.3
    # The Trainer's calibration computes the EER exactly from the sorted scores: the same rate.
    assert abs(calibration.equal_error_rate(1 - scores, labels)[0] - eer) < 0.005
    # Perfectly separated scores: no error at the threshold between them.
    separated = np.where(labels == 1, 0.9, 0.1)
    assert verification.equal_error_rate(
        *_rates_at(separated, labels, np.linspace(0, 1, 1000))) == 0.0
    # Without one of the classes there is no EER.
    assert np.isnan(verification.equal_error_rate(np.array([np.nan]), np.array([0.0])))


def test_fnmr_at_fmr_is_the_fewest_refused_matches_within_the_false_match_budget():
    fmr = np.array([1.0, 0.5, 0.2, 0.05, 0.01, 0.0])
    fnmr = np.array([0.0, 0.01, 0.05, 0.2, 0.4, 1.0])
    assert verification.fnmr_at_fmr(fmr, fnmr, 0.05) == 0.2
    assert verification.fnmr_at_fmr(fmr, fnmr, 0.01) == 0.4
    assert verification.fnmr_at_fmr(fmr, fnmr, 0.3) == 0.05
    with pytest.raises(ValueError, match="false_match_rate"):
        verification.FalseNonMatchRateAtFalseMatchRate(false_match_rate=1.5)


# Two models that score the same eval pairs: both put 85% of them on the right side of 0.5 (the
# same accuracy), but the candidate's errors are confident (a same-class pair at 0.1, a
# different-class pair at 0.9) while the baseline's 30% of same-class pairs sit at 0.4, above
# every different-class pair: a threshold between them separates all pairs (EER 0).
N = 100  # pairs of each label
SCORES = {
    "baseline": (np.r_[np.full(70, 0.9), np.full(30, 0.4)], np.full(N, 0.1)),
    "candidate": (np.r_[np.full(85, 0.9), np.full(15, 0.1)],
                  np.r_[np.full(85, 0.1), np.full(15, 0.9)]),
}


def _score_model(path: str, feature: str) -> None:
    """A SavedModel whose serving signature, like the exported Siamese model's, takes serialized
    tf.Examples and answers the similarity: here, the example's `feature`."""
    spec = {feature: tf.io.FixedLenFeature([], tf.float32)}

    class Scorer(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
        def serve(self, examples):
            return {signatures.SIMILARITY: tf.io.parse_example(examples, spec)[feature]}

    module = Scorer()
    tf.saved_model.save(module, path, signatures={signatures.SERVING_DEFAULT: module.serve})


def _write_pairs(path: str) -> None:
    with tf.io.TFRecordWriter(path) as writer:
        for label in (1, 0):
            for i in range(N):
                example = tf.train.Example()
                example.features.feature[features.LABEL].int64_list.value.append(label)
                for model, (same, different) in SCORES.items():
                    score = (same if label else different)[i]
                    example.features.feature[model].float_list.value.append(float(score))
                writer.write(example.SerializeToString())


def test_a_candidate_whose_eer_rose_is_not_blessed_though_its_accuracy_held(tmp_path):
    data = str(tmp_path / "eval.tfrecord")
    _write_pairs(data)
    models = {}
    for name in SCORES:
        _score_model(str(tmp_path / name), name)
        models[name] = str(tmp_path / name)

    # The pipeline's EvalConfig, with the baseline spec the Evaluator adds when a blessed model
    # exists (tfma.update_eval_config_with_defaults(has_baseline=True)).
    eval_config = make_eval_config(PipelineConfig())
    candidate_spec = eval_config.model_specs[0]
    candidate_spec.name = "candidate"
    baseline_spec = eval_config.model_specs.add()
    baseline_spec.CopyFrom(candidate_spec)
    baseline_spec.name, baseline_spec.is_baseline = "baseline", True
    shared = [tfma.default_eval_shared_model(eval_saved_model_path=path, model_name=name,
                                             eval_config=eval_config)
              for name, path in models.items()]
    out = str(tmp_path / "evaluation")
    tfma.run_model_analysis(eval_shared_model=shared, eval_config=eval_config,
                            data_location=data, output_path=out)

    metrics = tfma.load_eval_result(out, model_name="candidate").get_metrics_for_slice()
    baseline_metrics = tfma.load_eval_result(out, model_name="baseline").get_metrics_for_slice()
    assert metrics["binary_accuracy"]["doubleValue"] == pytest.approx(0.85)
    assert baseline_metrics["binary_accuracy"]["doubleValue"] == pytest.approx(0.85)
    assert metrics[verification.EER_NAME]["doubleValue"] == pytest.approx(0.15, abs=1e-6)
    assert baseline_metrics[verification.EER_NAME]["doubleValue"] == pytest.approx(0.0)
    # At 1% FMR: the candidate's strangers score like its matches (0.9), so only a threshold
    # above 0.9 keeps them out, and it refuses every match; the baseline refuses none.
    assert metrics[verification.FNMR_AT_FMR_NAME]["doubleValue"] == pytest.approx(1.0)
    assert baseline_metrics[verification.FNMR_AT_FMR_NAME]["doubleValue"] == pytest.approx(0.0)

    validation = tfma.load_validation_result(out)
    assert not validation.validation_ok
    failed = {(f.metric_key.name, f.metric_threshold.HasField("change_threshold"))
              for slice_failures in validation.metric_validations_per_slice
              for f in slice_failures.failures}
    # Only the EER's rise over the baseline fails: accuracy, AUC and the absolute EER pass.
    assert failed == {(verification.EER_NAME, True)}, failed
