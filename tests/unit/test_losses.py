"""Contrastive loss on hand-computed values. Label 1 = same identity."""

import numpy as np
import pytest
import tensorflow as tf

from siamese_tfx.components.trainer.losses import ContrastiveLoss


def test_contrastive_loss_hand_computed():
    # margin 1: same pairs cost d^2; different pairs cost max(0, 1 - d)^2.
    labels = np.array([1, 1, 0, 0, 0], dtype=np.float32)
    distances = np.array([0.0, 0.5, 0.25, 1.0, 1.5], dtype=np.float32)
    # per pair: 0, 0.25, 0.5625, 0, 0  -> mean 0.1625
    loss = ContrastiveLoss(margin=1.0)(labels, distances)
    assert float(loss) == pytest.approx(0.1625, abs=1e-7)


def test_margin_and_label_convention():
    loss = ContrastiveLoss(margin=2.0)
    # A different pair at distance 0.5 costs (2 - 0.5)^2 = 2.25; a same pair there 0.25.
    assert float(loss(np.array([0.0]), np.array([0.5]))) == pytest.approx(2.25)
    assert float(loss(np.array([1.0]), np.array([0.5]))) == pytest.approx(0.25)


def test_matches_formula_on_random_values():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 64).astype(np.float32)
    d = rng.uniform(0, 2, 64).astype(np.float32)
    m = 1.3
    expected = np.mean(y * d**2 + (1 - y) * np.maximum(0, m - d) ** 2)
    got = ContrastiveLoss(margin=m)(y.reshape(-1, 1), d)
    assert float(got) == pytest.approx(float(expected), rel=1e-6)


def test_reloads_from_config():
    loss = ContrastiveLoss(margin=0.7)
    again = tf.keras.losses.deserialize(tf.keras.losses.serialize(loss))
    assert isinstance(again, ContrastiveLoss) and again.margin == pytest.approx(0.7)
