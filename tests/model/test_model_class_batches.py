"""Class batches for the triplet loss: classes recovered from the train split's pairs, batches of
P classes x K images, rotation classes."""

import numpy as np
import pytest
import tensorflow as tf

from siamese_tfx.components.contract import features
from siamese_tfx.components.trainer import class_batches, losses

LEFT, RIGHT = (features.transformed_name(k) for k in features.IMAGE_KEYS)


def _images(count: int, size: int = 6, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(size=(count, size, size, 1)).astype(np.float32)


def test_classes_from_pairs_are_the_components_of_the_positive_pairs():
    x = _images(6)
    # Positive pairs link 0-1, 1-2 (one class) and 3-4; 5 is only in a negative pair.
    pairs = [(x[[0, 1, 3, 0]], x[[1, 2, 4, 5]], np.array([[1], [1], [1], [0]]))]
    images, classes = class_batches.classes_from_pairs(pairs)
    assert len(images) == 5  # Distinct images; 5 (in no positive pair) is left out.
    by_image = {images[i].tobytes(): c for i, c in enumerate(classes)}
    ids = [by_image[x[i].tobytes()] for i in range(5)]
    assert ids[0] == ids[1] == ids[2] != ids[3] == ids[4]
    assert sorted(set(classes)) == [0, 1]


def test_images_per_class_checks_the_split():
    assert class_batches.images_per_class(64, 16) == 8
    with pytest.raises(ValueError):
        class_batches.images_per_class(64, 48)  # 128 images do not split into 48 classes
    with pytest.raises(ValueError):
        class_batches.images_per_class(4, 8)  # one image per class: no positive


@pytest.mark.parametrize("rotations", [False, True])
def test_class_batch_dataset_gives_p_classes_of_k_images(rotations):
    num_classes, per_class = 5, 4
    images = _images(num_classes * per_class)
    classes = np.repeat(np.arange(num_classes), per_class)
    dataset = class_batches.class_batch_dataset(images, classes, batch_size=4,
                                                classes_per_batch=2, rotations=rotations)
    for batch, ids in dataset.take(3):
        assert batch[LEFT].shape == (4, 6, 6, 1) and batch[RIGHT].shape == (4, 6, 6, 1)
        ids = ids.numpy()
        assert ids.shape == (4, 2)
        values, counts = np.unique(ids, return_counts=True)
        assert len(values) == 2 and (counts == 4).all()
        for side, key in ((0, LEFT), (1, RIGHT)):
            for image, c in zip(batch[key].numpy(), ids[:, side]):
                base, turn = c % num_classes, c // num_classes
                pool = np.rot90(images[classes == base], turn, axes=(1, 2))
                assert np.isclose(pool, image).all(axis=(1, 2, 3)).any()
                assert rotations or turn == 0
        # The loss mines over them.
        loss = losses.SemiHardTripletLoss(0.5)(tf.constant(ids),
                                               tf.random.normal([4, 2 * 3]))
        assert np.isfinite(float(loss))


def test_rotation_classes_need_square_images():
    with pytest.raises(ValueError):
        class_batches.class_batch_dataset(np.zeros((8, 6, 4, 1), np.float32),
                                          np.repeat(np.arange(4), 2), 4, 2, rotations=True)


def _classes_drawn(dataset: tf.data.Dataset, batches: int) -> set[int]:
    """The classes a dataset's batches show, read off the images (every image of class c is
    filled with c)."""
    seen: set[int] = set()
    for batch, _ in dataset.take(batches):
        for key in (LEFT, RIGHT):
            seen.update(int(round(v)) for v in batch[key].numpy()[:, 0, 0, 0])
    return seen


def test_class_fraction_draws_each_seed_its_own_share_of_the_classes():
    num_classes, per_class = 10, 3
    classes = np.repeat(np.arange(num_classes), per_class)
    images = np.broadcast_to(classes.astype(np.float32)[:, None, None, None],
                             (len(classes), 4, 4, 1)).copy()
    everything = _classes_drawn(class_batches.class_batch_dataset(
        images, classes, batch_size=4, classes_per_batch=2, seed=0), 60)
    assert everything == set(range(num_classes))
    bags = [_classes_drawn(class_batches.class_batch_dataset(
        images, classes, batch_size=4, classes_per_batch=2, seed=seed, class_fraction=0.6), 60)
        for seed in (0, 1, 2)]
    # Each member sees exactly 6 of the 10 classes, and the members' bags differ.
    assert all(len(bag) == 6 for bag in bags)
    assert len({frozenset(bag) for bag in bags}) > 1
    # The same seed draws the same bag (a restarted member trains on the same identities).
    assert _classes_drawn(class_batches.class_batch_dataset(
        images, classes, batch_size=4, classes_per_batch=2, seed=1, class_fraction=0.6),
        60) == bags[1]


def test_class_fraction_must_leave_a_batch_worth_of_classes():
    classes = np.repeat(np.arange(10), 2)
    with pytest.raises(ValueError, match="ensemble_class_fraction 0.3 keeps 3 of the train "
                       "split's 10 classes"):
        class_batches.class_batch_dataset(_images(20), classes, batch_size=4,
                                          classes_per_batch=4, class_fraction=0.3)
