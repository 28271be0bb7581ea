"""Siamese heads: two embeddings -> a distance (>= 0, larger = less similar), [batch].

- euclidean: ||a - b||_2 of the unit embeddings, in [0, 2]; no weights. Trained with the
  contrastive or the triplet loss.
- l1_sigmoid (Koch et al. 2015): p(same) = sigmoid(w . |a - b| + b); distance = 1 - p(same), in
  (0, 1). Trained with binary cross-entropy.
- matchnet (Han et al. 2015, MatchNet): a learned metric network (two ReLU layers and a logit)
  on the concatenated embeddings, averaged over both orders so the head is symmetric;
  distance = 1 - p(same). Trained with binary cross-entropy.

Every head's distance is what calibration thresholds (match: distance <= threshold) and what the
exported model serves as `distance`.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from siamese_tfx.components.trainer.layers import EuclideanDistance

keras = tf.keras

# The distance scale of each head: the exported similarity's temperature is a fraction of it.
PROBABILITY_HEADS = ("l1_sigmoid", "matchnet")


@keras.utils.register_keras_serializable(package="siamese_tfx")
class L1SigmoidDistance(keras.layers.Layer):
    """Koch et al.'s head: 1 - sigmoid(Dense(1)(|a - b|)), i.e. sigmoid(-logit)."""

    def build(self, input_shape: Any) -> None:
        self.logit = keras.layers.Dense(1, name="logit")
        self.logit.build(input_shape[0])
        super().build(input_shape)

    def call(self, inputs: Any) -> tf.Tensor:
        a, b = inputs
        return tf.reshape(tf.sigmoid(-self.logit(tf.abs(a - b))), [-1])


@keras.utils.register_keras_serializable(package="siamese_tfx")
class MetricNetworkDistance(keras.layers.Layer):
    """MatchNet's metric network on [a, b] and [b, a] (averaged logits): 1 - sigmoid(logit)."""

    def __init__(self, units: int = 128, **kwargs: Any):
        super().__init__(**kwargs)
        self.units = int(units)

    def build(self, input_shape: Any) -> None:
        dim = int(input_shape[0][-1])
        self.hidden1 = keras.layers.Dense(self.units, activation="relu", name="fc1")
        self.hidden2 = keras.layers.Dense(self.units, activation="relu", name="fc2")
        self.logit = keras.layers.Dense(1, name="logit")
        self.hidden1.build((None, 2 * dim))
        self.hidden2.build((None, self.units))
        self.logit.build((None, self.units))
        super().build(input_shape)

    def _logit(self, x: tf.Tensor) -> tf.Tensor:
        return self.logit(self.hidden2(self.hidden1(x)))

    def call(self, inputs: Any) -> tf.Tensor:
        a, b = inputs
        logit = 0.5 * (self._logit(tf.concat([a, b], -1)) + self._logit(tf.concat([b, a], -1)))
        return tf.reshape(tf.sigmoid(-logit), [-1])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "units": self.units}


def build_head(head: str, name: str) -> keras.layers.Layer:
    """The distance layer of `head` (ModelConfig.head)."""
    if head == "euclidean":
        return EuclideanDistance(name=name)
    if head == "l1_sigmoid":
        return L1SigmoidDistance(name=name)
    if head == "matchnet":
        return MetricNetworkDistance(name=name)
    raise ValueError(f"unknown head {head!r}")


def distance_scale(head: str, margin: float) -> float:
    """The typical spread of the head's distances: the margin for the euclidean head (the loss
    pushes different pairs that far), 1 for the probability heads (distance in (0, 1))."""
    return 1.0 if head in PROBABILITY_HEADS else float(margin)
