"""On-the-fly augmentation for small data: small random affine distortions of the training
images, as Koch et al. (2015) used on Omniglot. Applied in tf.data to the Trainer's training
batches only: it is not part of the Siamese model, so it never enters the serving graph.
"""

from __future__ import annotations

import math
from typing import Any

import tensorflow as tf

from siamese_tfx.components.contract import features

# Koch et al.: rotation in [-10, 10] degrees, shear in [-0.3, 0.3], scale in [0.8, 1.2],
# translation in [-2, 2] pixels, each component applied with probability 0.5.
MAX_ROTATION = math.radians(10.0)
MAX_SHEAR = 0.3
SCALE_RANGE = (0.8, 1.2)
MAX_SHIFT = 2.0
PROBABILITY = 0.5


def _maybe(values: tf.Tensor, neutral: float) -> tf.Tensor:
    keep = tf.random.uniform(tf.shape(values)) < PROBABILITY
    return tf.where(keep, values, neutral)


def affine_transforms(batch: tf.Tensor, height: int, width: int) -> tf.Tensor:
    """[batch, 8] random projective-transform rows (output pixel -> input pixel), about the
    image centre, for `tf.raw_ops.ImageProjectiveTransformV3`."""
    shape = tf.reshape(batch, [1])
    theta = _maybe(tf.random.uniform(shape, -MAX_ROTATION, MAX_ROTATION), 0.0)
    shear_x = _maybe(tf.random.uniform(shape, -MAX_SHEAR, MAX_SHEAR), 0.0)
    shear_y = _maybe(tf.random.uniform(shape, -MAX_SHEAR, MAX_SHEAR), 0.0)
    scale_x = _maybe(tf.random.uniform(shape, *SCALE_RANGE), 1.0)
    scale_y = _maybe(tf.random.uniform(shape, *SCALE_RANGE), 1.0)
    shift_x = _maybe(tf.random.uniform(shape, -MAX_SHIFT, MAX_SHIFT), 0.0)
    shift_y = _maybe(tf.random.uniform(shape, -MAX_SHIFT, MAX_SHIFT), 0.0)
    cos, sin = tf.cos(theta), tf.sin(theta)
    # A = rotation @ shear @ scale.
    a00 = (cos + -sin * shear_y) * scale_x
    a01 = (cos * shear_x - sin) * scale_y
    a10 = (sin + cos * shear_y) * scale_x
    a11 = (sin * shear_x + cos) * scale_y
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    b0 = cx - a00 * cx - a01 * cy + shift_x
    b1 = cy - a10 * cx - a11 * cy + shift_y
    zeros = tf.zeros_like(theta)
    return tf.stack([a00, a01, b0, a10, a11, b1, zeros, zeros], axis=1)


def distort(images: tf.Tensor) -> tf.Tensor:
    """[batch, H, W, C] float images -> the same with a random small affine distortion each
    (edges extended with the nearest pixel, so Omniglot's white background stays white)."""
    shape = tf.shape(images)
    transforms = affine_transforms(shape[0], images.shape[1], images.shape[2])
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transforms, output_shape=shape[1:3],
        fill_value=0.0, interpolation="BILINEAR", fill_mode="NEAREST")


def random_flip(images: tf.Tensor) -> tf.Tensor:
    """Each image mirrored left-right with probability 0.5 (faces, not characters)."""
    flip = tf.random.uniform(tf.reshape(tf.shape(images)[0], [1])) < PROBABILITY
    return tf.where(tf.reshape(flip, [-1, 1, 1, 1]), tf.image.flip_left_right(images), images)


def augment_pairs(dataset: tf.data.Dataset, flip: bool = False) -> tf.data.Dataset:
    """(features, label) batches with both transformed images of every pair distorted
    independently (and, with `flip`, mirrored left-right at random)."""

    def apply(batch_features: dict[str, Any], label: Any) -> tuple[dict[str, Any], Any]:
        out = dict(batch_features)
        for key in features.IMAGE_KEYS:
            name = features.transformed_name(key)
            images = random_flip(batch_features[name]) if flip else batch_features[name]
            out[name] = distort(images)
        return out, label

    return dataset.map(apply, num_parallel_calls=tf.data.AUTOTUNE)
