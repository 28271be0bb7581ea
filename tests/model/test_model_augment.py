"""Training-time augmentation: small affine distortions in tf.data, never in the model."""

import numpy as np
import tensorflow as tf

from siamese_tfx.components.contract import features
from siamese_tfx.components.contract.config import ImageConfig, ModelConfig
from siamese_tfx.components.trainer import augment
from siamese_tfx.components.trainer import model as model_lib

LEFT = features.transformed_name(features.LEFT_IMAGE)
RIGHT = features.transformed_name(features.RIGHT_IMAGE)


def _strokes(n=16, size=20):
    images = np.ones((n, size, size, 1), np.float32)  # white background, a dark bar
    images[:, 8:12, 3:17] = 0.0
    return images


def test_distortions_are_small_and_keep_shape_and_range():
    tf.random.set_seed(0)
    images = _strokes()
    out = augment.distort(tf.constant(images)).numpy()
    assert out.shape == images.shape
    assert out.min() >= 0.0 and out.max() <= 1.0
    changed = np.abs(out - images).reshape(len(images), -1).max(axis=1) > 1e-3
    assert changed.mean() > 0.5  # most images are moved (each component has p = 0.5)
    # Small: the bar's ink stays roughly the same amount (scale within 0.8..1.2 per axis).
    ink_before = (1 - images).sum(axis=(1, 2, 3))
    ink_after = (1 - out).sum(axis=(1, 2, 3))
    assert np.all(ink_after > 0.5 * ink_before) and np.all(ink_after < 1.6 * ink_before)
    # The white background stays white at the borders (nearest fill, no black frame).
    assert out[:, 0, :, :].min() > 0.9


def test_identity_transform_rows_when_nothing_is_drawn():
    rows = augment.affine_transforms(tf.constant(64), 20, 20).numpy()
    assert rows.shape == (64, 8)
    np.testing.assert_allclose(rows[:, 6:], 0.0)
    # Linear parts stay near the identity: |rotation| <= 10 deg, shear <= 0.3, scale 0.8..1.2.
    assert np.all(np.abs(rows[:, 0] - 1) < 0.55) and np.all(np.abs(rows[:, 4] - 1) < 0.55)


def test_augment_pairs_distorts_both_images_and_keeps_labels():
    images = _strokes(4)
    dataset = tf.data.Dataset.from_tensors(({LEFT: images, RIGHT: images}, np.array([1, 0, 1, 0])))
    tf.random.set_seed(1)
    batch, labels = next(iter(augment.augment_pairs(dataset)))
    np.testing.assert_array_equal(labels.numpy(), [1, 0, 1, 0])
    assert not np.allclose(batch[LEFT].numpy(), batch[RIGHT].numpy())


def test_the_model_has_no_augmentation_in_it():
    siamese, _ = model_lib.build_siamese(ImageConfig(height=20, width=20), ModelConfig())
    x = {LEFT: _strokes(2), RIGHT: _strokes(2)[::-1]}
    np.testing.assert_array_equal(siamese(x, training=True).numpy(),
                                  siamese(x, training=True).numpy())


def test_random_flip_mirrors_about_half_the_images():
    tf.random.set_seed(0)
    images = np.random.default_rng(0).uniform(size=(64, 6, 5, 1)).astype(np.float32)
    out = augment.random_flip(tf.constant(images)).numpy()
    mirrored = np.all(out == images[:, :, ::-1], axis=(1, 2, 3))
    kept = np.all(out == images, axis=(1, 2, 3))
    assert (mirrored | kept).all() and 10 < mirrored.sum() < 54


def test_standardize_images_is_part_of_the_backbone():
    image = ImageConfig(height=12, width=12, channels=1)
    cfg = ModelConfig(backbone="conv4", embedding_dim=4, standardize_images=True)
    siamese, backbone = model_lib.build_siamese(image, cfg)
    assert any(layer.name == "standardize" for layer in backbone.layers)
    x = np.random.default_rng(0).uniform(size=(2, 12, 12, 1)).astype(np.float32)
    # Brightness and contrast do not change the embedding.
    np.testing.assert_allclose(backbone(x, training=False).numpy(),
                               backbone(0.5 * x + 0.2, training=False).numpy(), atol=1e-4)
