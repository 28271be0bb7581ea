"""The Siamese network: ONE backbone called on both images, and a distance head.

Both branches are the same Keras model object, so they share one set of weights: the Siamese
model's parameter count is the backbone's plus the head's (the Euclidean head has none).
"""

from __future__ import annotations

from typing import Any, Callable

import tensorflow as tf

from components import features
from pipeline.config import ImageConfig, ModelConfig

keras = tf.keras

_EPSILON = 1e-12


@keras.utils.register_keras_serializable(package="siamese_tfx")
class EuclideanDistance(keras.layers.Layer):
    """||a - b||_2 per row, as a [batch] vector; kept away from sqrt(0) so its gradient is finite."""

    def call(self, inputs: Any) -> tf.Tensor:
        a, b = inputs
        squared = tf.reduce_sum(tf.square(a - b), axis=-1)
        return tf.sqrt(tf.maximum(squared, _EPSILON))


@keras.utils.register_keras_serializable(package="siamese_tfx")
class L2Normalize(keras.layers.Layer):
    """Scales each embedding to unit length, so distances lie in [0, 2]."""

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        return tf.math.l2_normalize(inputs, axis=-1)


def _small_conv(image: ImageConfig, model: ModelConfig) -> keras.Model:
    inputs = keras.Input((image.height, image.width, image.channels), name="image")
    x = inputs
    for filters in (32, 64, 128):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(model.embedding_dim)(x)
    return keras.Model(inputs, L2Normalize()(x), name="small_conv")


BACKBONE_BUILDERS: dict[str, Callable[[ImageConfig, ModelConfig], keras.Model]] = {
    "small_conv": _small_conv,
}


def build_backbone(image: ImageConfig, model: ModelConfig) -> keras.Model:
    """The embedding network: [batch, H, W, C] in [0, 1] -> [batch, embedding_dim]."""
    return BACKBONE_BUILDERS[model.backbone](image, model)


def build_siamese(image: ImageConfig, model: ModelConfig) -> tuple[keras.Model, keras.Model]:
    """Returns (siamese, backbone). The Siamese model maps the transformed image features
    {left_image_xf, right_image_xf} to their embeddings' Euclidean distance, [batch]."""
    backbone = build_backbone(image, model)
    shape = (image.height, image.width, image.channels)
    inputs = {
        features.transformed_name(key): keras.Input(shape, name=features.transformed_name(key))
        for key in features.IMAGE_KEYS
    }
    left, right = (inputs[features.transformed_name(key)] for key in features.IMAGE_KEYS)
    distance = EuclideanDistance(name=features.DISTANCE)([backbone(left), backbone(right)])
    siamese = keras.Model(inputs, distance, name="siamese")
    return siamese, backbone
