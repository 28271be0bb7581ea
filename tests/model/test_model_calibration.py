"""Threshold calibration and verification metrics on hand-worked values (label 1 = same)."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from siamese_tfx.components.trainer import calibration

# Sorted: 0.1(1) 0.2(0) 0.3(1) 0.4(1) 0.5(0) 0.6(0)
D = [0.4, 0.1, 0.6, 0.2, 0.3, 0.5]
Y = [1, 1, 0, 0, 1, 0]


def test_accuracy_mode_matches_best_threshold_and_reports_metrics():
    m = calibration.calibrate(D, Y, "accuracy")
    # Cut at 0.45: matches 0.1, 0.2, 0.3, 0.4 -> TP 3, FP 1, FN 0, TN 2.
    assert m["threshold"] == pytest.approx(0.45)
    assert m["accuracy"] == pytest.approx(5 / 6)
    assert m["precision"] == pytest.approx(3 / 4)
    assert m["recall"] == 1.0
    assert m["false_match_rate"] == pytest.approx(1 / 3)
    # Same pairs closer than different ones: 7 of 9 (0.1 beats all 3, 0.3 and 0.4 beat 2 each).
    assert m["auc"] == pytest.approx(7 / 9)
    # FMR and FNMR cross at 1/3, between 0.3 and 0.4.
    assert m["eer"] == pytest.approx(1 / 3)
    assert m["eer_threshold"] == pytest.approx(0.35)
    assert m["pairs"] == 6 and m["positive_pairs"] == 3


def test_false_match_rate_mode_meets_the_target():
    # FMR 0 allows matching only 0.1 (0.2 is a different pair): cut between 0.1 and 0.2.
    assert calibration.threshold_for_false_match_rate(D, Y, 0.0) == pytest.approx(0.15)
    # FMR <= 1/3 allows one false match: up to 0.4.
    assert calibration.threshold_for_false_match_rate(D, Y, 0.34) == pytest.approx(0.45)
    m = calibration.calibrate(D, Y, "false_match_rate", 0.0)
    assert m["false_match_rate"] == 0.0 and m["recall"] == pytest.approx(1 / 3)


def test_auc_agrees_with_scikit_learn_with_ties():
    rng = np.random.default_rng(0)
    d = rng.uniform(size=300).round(2)
    y = rng.integers(0, 2, 300)
    assert calibration.auc(d, y) == pytest.approx(roc_auc_score(y, -d), abs=1e-9)


def test_separable_pairs_have_zero_eer_and_unit_auc():
    m = calibration.verification_metrics([0.1, 0.2, 0.8, 0.9], [1, 1, 0, 0], 0.5)
    assert (m["accuracy"], m["auc"], m["eer"]) == (1.0, 1.0, 0.0)


def test_bad_mode_is_refused():
    with pytest.raises(ValueError, match="threshold mode"):
        calibration.calibrate(D, Y, "f1")
