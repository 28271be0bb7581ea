import numpy as np
import pytest

from siamese_tfx.components.trainer.calibration import best_threshold


def test_separable_distances_give_perfect_accuracy_between_the_groups():
    threshold, accuracy = best_threshold([0.1, 0.2, 0.3, 0.8, 0.9], [1, 1, 1, 0, 0])
    assert accuracy == 1.0
    assert threshold == pytest.approx(0.55)


def test_overlap_picks_the_best_cut():
    # Sorted: 0.1(1) 0.2(0) 0.3(1) 0.4(1) 0.5(0) 0.6(0): best cut after 0.4 -> 5/6 right.
    threshold, accuracy = best_threshold([0.4, 0.1, 0.6, 0.2, 0.3, 0.5], [1, 1, 0, 0, 1, 0])
    assert accuracy == pytest.approx(5 / 6)
    assert threshold == pytest.approx(0.45)


def test_ties_are_not_split():
    threshold, accuracy = best_threshold([0.5, 0.5, 0.5, 0.9], [1, 0, 1, 0])
    assert threshold == pytest.approx(0.7)
    assert accuracy == pytest.approx(0.75)


def test_bad_input():
    with pytest.raises(ValueError):
        best_threshold(np.array([]), np.array([]))
