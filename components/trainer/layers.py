"""Registered Keras layers of the Siamese network (no Lambda layers), so a SavedModel reloads
anywhere without custom objects."""

from __future__ import annotations

from typing import Any

import tensorflow as tf

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


@keras.utils.register_keras_serializable(package="siamese_tfx")
class ImageNetPreprocess(keras.layers.Layer):
    """[0, 1] RGB images -> what keras.applications `family` expects (its `preprocess_input` on
    0..255 pixels): [-1, 1] for mobilenet_v2/inception_v3, caffe BGR mean-subtracted for resnet50,
    0..255 for efficientnet (which normalises inside the network)."""

    def __init__(self, family: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.family = family

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        module = getattr(keras.applications, self.family)
        return module.preprocess_input(inputs * 255.0)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "family": self.family}


@keras.utils.register_keras_serializable(package="siamese_tfx")
class ConcatEmbeddings(keras.layers.Layer):
    """[left, right] embeddings -> [batch, 2 * dim]: the triplet loss's y_pred (it splits it)."""

    def call(self, inputs: Any) -> tf.Tensor:
        a, b = inputs
        return tf.concat([tf.cast(a, tf.float32), tf.cast(b, tf.float32)], axis=-1)


@keras.utils.register_keras_serializable(package="siamese_tfx")
class PerImageStandardize(keras.layers.Layer):
    """Each image to zero mean and unit variance over its pixels (tf.image's
    per_image_standardization): removes global brightness and contrast, e.g. of face photos."""

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        return tf.image.per_image_standardization(inputs)


@keras.utils.register_keras_serializable(package="siamese_tfx")
class EnsembleEmbedding(keras.layers.Layer):
    """The members' embeddings -> their concatenation scaled by 1/sqrt(members): unit length when
    each member's is, and its squared Euclidean distance is the mean of the members' squared
    distances (an ensemble's distance is the root mean square of its members')."""

    def call(self, inputs: Any) -> tf.Tensor:
        parts = [tf.cast(x, tf.float32) for x in inputs]
        return tf.concat(parts, axis=-1) / tf.sqrt(float(len(parts)))


@keras.utils.register_keras_serializable(package="siamese_tfx")
class StackPairs(keras.layers.Layer):
    """[left, right] images -> one [2B, ...] batch (left images first), so the shared backbone
    runs once on all of them in training (`model.training_model`)."""

    def call(self, inputs: Any) -> tf.Tensor:
        return tf.concat(list(inputs), axis=0)


@keras.utils.register_keras_serializable(package="siamese_tfx")
class UnstackPairs(keras.layers.Layer):
    """A [2B, ...] batch stacked by `StackPairs` -> [left, right] halves."""

    def call(self, inputs: tf.Tensor) -> list[tf.Tensor]:
        left, right = tf.split(inputs, 2, axis=0)
        return [left, right]
