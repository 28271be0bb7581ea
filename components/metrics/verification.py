"""Verification metrics for the Evaluator (TFMA): the equal error rate and the false non-match
rate at a target false match rate, computed from TFMA's binary confusion matrices over the
served `similarity` (a match scores higher).

In verification terms, with "match" the positive class: the false match rate (FMR) at a
threshold is the share of different-class pairs scored as matches (FP / (FP + TN)), the false
non-match rate (FNMR) the share of same-class pairs scored as non-matches (FN / (FN + TP)). The
EER is where the two are equal. The Evaluator loads these classes by name from this module
(pipeline.make_eval_config), in its own process or on Beam workers, so they hold no state.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
from tensorflow_model_analysis.metrics import binary_confusion_matrices, metric_types
from tensorflow_model_analysis.metrics.confusion_matrix_metrics import ConfusionMatrixMetricBase

EER_NAME = "equal_error_rate"
FNMR_AT_FMR_NAME = "false_non_match_rate_at_false_match_rate"
NUM_THRESHOLDS = 1000  # equidistant over [0, 1], the range of the served similarity


def error_rates(matrices: Any) -> tuple[np.ndarray, np.ndarray]:
    """(FMR, FNMR) at each of the matrices' thresholds; NaN where a class has no pairs."""
    tp, tn = np.asarray(matrices.tp, float), np.asarray(matrices.tn, float)
    fp, fn = np.asarray(matrices.fp, float), np.asarray(matrices.fn, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return fp / (fp + tn), fn / (fn + tp)


def equal_error_rate(fmr: np.ndarray, fnmr: np.ndarray) -> float:
    """The rate where FMR and FNMR cross, linearly interpolated between the two thresholds that
    bracket the crossing. FMR falls and FNMR rises as the threshold rises. NaN without both
    classes."""
    fmr, fnmr = np.asarray(fmr, float), np.asarray(fnmr, float)
    if fmr.size == 0 or np.isnan(fmr).any() or np.isnan(fnmr).any():
        return float("nan")
    gap = fnmr - fmr  # rises with the threshold
    above = np.nonzero(gap >= 0)[0]
    if above.size == 0:  # even the highest threshold accepts more strangers than it rejects
        return float(fmr[-1] + fnmr[-1]) / 2
    i = int(above[0])
    if i == 0:  # FNMR already at or above FMR when every pair is accepted
        return float(fmr[0] + fnmr[0]) / 2
    # Between thresholds i-1 (gap < 0) and i (gap >= 0): where the interpolated gap is zero.
    w = -gap[i - 1] / (gap[i] - gap[i - 1])
    return float((1 - w) * fmr[i - 1] + w * fmr[i])


def fnmr_at_fmr(fmr: np.ndarray, fnmr: np.ndarray, target: float) -> float:
    """The lowest FNMR among the thresholds whose FMR is at most `target` (1.0 when none is)."""
    fmr, fnmr = np.asarray(fmr, float), np.asarray(fnmr, float)
    if fmr.size == 0 or np.isnan(fmr).any() or np.isnan(fnmr).any():
        return float("nan")
    allowed = fmr <= target
    return float(fnmr[allowed].min()) if allowed.any() else 1.0


class EqualErrorRate(ConfusionMatrixMetricBase):
    """The equal error rate of the similarity score (lower is better)."""

    def __init__(self, num_thresholds: int = NUM_THRESHOLDS, name: Optional[str] = None):
        super().__init__(num_thresholds=num_thresholds, name=name)

    def _default_name(self) -> str:
        return EER_NAME

    def _metric_value(self, key: metric_types.MetricKey,
                      matrices: binary_confusion_matrices.Matrices) -> float:
        del key
        return equal_error_rate(*error_rates(matrices))


class FalseNonMatchRateAtFalseMatchRate(ConfusionMatrixMetricBase):
    """The share of same-class pairs refused at the best threshold that accepts at most
    `false_match_rate` of the different-class pairs (lower is better)."""

    def __init__(self, false_match_rate: float, num_thresholds: int = NUM_THRESHOLDS,
                 name: Optional[str] = None):
        if not 0.0 <= false_match_rate <= 1.0:
            raise ValueError(f"false_match_rate must be in [0, 1], got {false_match_rate}")
        super().__init__(num_thresholds=num_thresholds, name=name,
                         false_match_rate=false_match_rate)

    def _default_name(self) -> str:
        return FNMR_AT_FMR_NAME

    def _metric_value(self, false_match_rate: float, key: metric_types.MetricKey,
                      matrices: binary_confusion_matrices.Matrices) -> float:
        del key
        return fnmr_at_fmr(*error_rates(matrices), false_match_rate)


metric_types.register_metric(EqualErrorRate)
metric_types.register_metric(FalseNonMatchRateAtFalseMatchRate)
