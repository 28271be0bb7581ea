"""Losses of the Siamese heads, registered so a SavedModel reloads without custom objects."""

from __future__ import annotations

from typing import Any

import tensorflow as tf

keras = tf.keras


@keras.utils.register_keras_serializable(package="siamese_tfx")
class ContrastiveLoss(keras.losses.Loss):
    """Contrastive loss (Hadsell, Chopra & LeCun 2006) on a Euclidean distance.

    y_true is the pair label: **1 = same identity (pull together), 0 = different (push apart
    to at least `margin`)**. y_pred is the distance d >= 0. Per pair:
        y * d**2 + (1 - y) * max(0, margin - d)**2
    and the mean over the batch (the default SUM_OVER_BATCH_SIZE reduction).
    """

    def __init__(self, margin: float = 1.0, name: str = "contrastive_loss", **kwargs: Any):
        super().__init__(name=name, **kwargs)
        self.margin = float(margin)

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        distance = tf.reshape(tf.cast(y_pred, tf.float32), [-1])
        same = tf.reshape(tf.cast(y_true, tf.float32), [-1])
        return same * tf.square(distance) + (1.0 - same) * tf.square(
            tf.maximum(self.margin - distance, 0.0)
        )

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "margin": self.margin}
