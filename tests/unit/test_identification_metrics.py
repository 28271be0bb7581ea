"""Identification metrics (components/metrics/identification.py) on worked-out values."""

import numpy as np
import pytest

from siamese_tfx.components.metrics.identification import identification_metrics


def test_identification_metrics_on_a_worked_example():
    # Gallery: a, a, b, c. Queries: a (right), b (ranked second), and strangers x, y.
    exemplar_labels = ["a", "a", "b", "c"]
    exemplar_distances = np.array([
        [0.1, 0.5, 0.3, 0.9],  # a: order a(0.1) b(0.3) a(0.5) c -> R=2, AP = (1/1 + 0)/2
        [0.4, 0.6, 0.5, 0.9],  # b: order a b a c -> R=1, AP = 0
        [0.2, 0.8, 0.7, 0.9],  # strangers
        [0.6, 0.7, 0.8, 0.9],
    ])
    ranked_labels = np.array([["a", "b", "c"], ["a", "b", "c"], ["a", "b", "c"],
                              ["a", "b", "c"]])
    ranked_distances = np.array([[0.1, 0.3, 0.9], [0.4, 0.5, 0.9], [0.2, 0.7, 0.9],
                                 [0.6, 0.8, 0.9]])

    m = identification_metrics(["a", "b", "x", "y"], ranked_labels, ranked_distances,
                               exemplar_labels, exemplar_distances, threshold=0.3)

    assert (m["mated_queries"], m["stranger_queries"], m["identities"]) == (2, 2, 3)
    assert m["top1_accuracy"] == 0.5 and m["top5_accuracy"] == 1.0
    assert m["recall_at_1"] == 0.5 and m["recall_at_5"] == 1.0
    assert m["map_at_r"] == pytest.approx((0.5 + 0.0) / 2)
    # At 0.3: query a is right and within; stranger x (0.2) is a false alarm, y (0.6) not.
    assert m["dir_at_threshold"] == 0.5
    assert m["false_alarm_rate_at_threshold"] == 0.5
    # 1% of 2 strangers: none may be called known, so the threshold is just below 0.2 and
    # query a (0.1) still counts; 10%: the same.
    assert m["threshold_at_far_0.01"] < 0.2 and m["dir_at_far_0.01"] == 0.5
    assert m["dir_at_far_0.1"] == 0.5


def test_without_strangers_there_is_no_open_set_figure():
    m = identification_metrics(["a"], np.array([["a"]]), np.array([[0.0]]), ["a"],
                               np.array([[0.0]]), 0.5)
    assert m["top1_accuracy"] == 1.0 and m["map_at_r"] == 1.0
    assert "dir_at_far_0.01" not in m and "false_alarm_rate_at_threshold" not in m
