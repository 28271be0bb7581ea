"""Class batches for the triplet loss: every training batch holds P classes x K images each.

The train split holds labelled PAIRS (PairExampleGen), not class ids, and Transform keeps only
the images and the label. The Trainer therefore recovers the identities of the train split
itself: every distinct transformed image is a node, every positive pair (label 1 = same
identity) an edge, and each connected component is one class (a negative pair never joins
two). With the thousands of positive pairs a split holds, the components are the classes (a
class whose images are not linked by positive pairs splits into several, which only makes a
few of the mined negatives wrong). Images in no positive pair are left out.

`class_batch_dataset` then samples, for every step, `classes_per_batch` classes and
2 * batch_size / classes_per_batch images of each (so a step sees as many images as a batch of
pairs), optionally treats each 90-degree rotation of a class as a class of its own (the
"new classes by rotation" augmentation of few-shot learning on Omniglot; square images only)
and hands them to the Siamese model as `batch_size` pairs (left halves, right halves), with
y_true = [batch, 2] class ids (left, right), which `SemiHardTripletLoss` mines triplets over.
Everything happens in tf.data on the training side: the served model never sees it.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import tensorflow as tf

from siamese_tfx.components.contract import features


class _DisjointSets:
    def __init__(self) -> None:
        self.parent: list[int] = []

    def add(self) -> int:
        self.parent.append(len(self.parent))
        return len(self.parent) - 1

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        a, b = self.find(a), self.find(b)
        if a != b:
            self.parent[max(a, b)] = min(a, b)


def classes_from_pairs(pairs: Any) -> tuple[np.ndarray, np.ndarray]:
    """(images [N, H, W, C], class ids [N] in 0..num_classes-1) from an iterable of
    (left images, right images, labels) numpy batches: distinct images, grouped into classes by
    the positive pairs (connected components); images in no positive pair are dropped."""
    index: dict[bytes, int] = {}
    images: list[np.ndarray] = []
    sets = _DisjointSets()
    linked: set[int] = set()

    def node(image: np.ndarray) -> int:
        key = hashlib.sha1(np.ascontiguousarray(image).tobytes()).digest()
        if key not in index:
            index[key] = sets.add()
            images.append(image)
        return index[key]

    for lefts, rights, labels in pairs:
        for left, right, label in zip(lefts, rights, np.reshape(labels, [-1])):
            a, b = node(left), node(right)
            if int(label) == 1 and a != b:
                sets.union(a, b)
                linked.update((a, b))
    kept = sorted(linked)
    roots = [sets.find(i) for i in kept]
    class_of_root = {r: k for k, r in enumerate(sorted(set(roots)))}
    if not kept:
        return np.zeros((0,), np.float32), np.zeros((0,), np.int64)
    return (np.stack([images[i] for i in kept]).astype(np.float32),
            np.array([class_of_root[r] for r in roots], np.int64))


def read_pairs(dataset: tf.data.Dataset) -> Any:
    """(left, right, labels) numpy batches of a finite dataset of (transformed features, label)."""
    left_key, right_key = (features.transformed_name(k) for k in features.IMAGE_KEYS)
    for batch_features, labels in dataset.as_numpy_iterator():
        yield batch_features[left_key], batch_features[right_key], labels


def images_per_class(batch_size: int, classes_per_batch: int) -> int:
    """K: images of each class in a batch of `batch_size` pairs (2 * batch_size images)."""
    if classes_per_batch < 2 or (2 * batch_size) % classes_per_batch:
        raise ValueError(f"classes_per_batch ({classes_per_batch}) must be >= 2 and divide "
                         f"the {2 * batch_size} images of a batch of {batch_size} pairs")
    per_class = 2 * batch_size // classes_per_batch
    if per_class < 2:
        raise ValueError(f"classes_per_batch ({classes_per_batch}) leaves fewer than 2 images "
                         f"per class in a batch of {batch_size} pairs: no positives to mine")
    return per_class


def bag_size(eligible: int, class_fraction: float) -> int:
    """How many of `eligible` classes a bag of `class_fraction` keeps (at least one)."""
    return eligible if class_fraction >= 1.0 else max(1, int(round(class_fraction * eligible)))


def class_batch_dataset(images: np.ndarray, classes: np.ndarray, batch_size: int,
                        classes_per_batch: int, rotations: bool = False,
                        seed: int = 0, class_fraction: float = 1.0) -> tf.data.Dataset:
    """Endless batches of `batch_size` pairs made of `classes_per_batch` classes x K images
    (see the module doc): ({left_image_xf, right_image_xf}, [batch, 2] class ids).
    `class_fraction` < 1: the batches draw only from that fraction of the classes (with two
    images or more), chosen at random with `seed` (an ensemble member's bag of identities)."""
    per_class = images_per_class(batch_size, classes_per_batch)
    if rotations and images.shape[1] != images.shape[2]:
        raise ValueError("rotation classes need square images, got "
                         f"{images.shape[1]}x{images.shape[2]}")
    num_classes = int(classes.max()) + 1 if len(classes) else 0
    members = [np.flatnonzero(classes == c) for c in range(num_classes)]
    eligible = np.array([c for c in range(num_classes) if len(members[c]) >= 2])
    variants = 4 if rotations else 1
    rng = np.random.default_rng(seed)
    if class_fraction < 1.0:
        kept = bag_size(len(eligible), class_fraction)
        if kept * variants < classes_per_batch:
            raise ValueError(
                f"ensemble_class_fraction {class_fraction} keeps {kept} of the train split's "
                f"{len(eligible)} classes with two images or more (x{variants} rotations), "
                f"fewer than classes_per_batch {classes_per_batch}")
        eligible = np.sort(rng.choice(eligible, kept, replace=False))
    if len(eligible) * variants < classes_per_batch:
        raise ValueError(f"the train split has {len(eligible)} classes with two images or more "
                         f"(x{variants} rotations); classes_per_batch is {classes_per_batch}")

    # The sampling runs as TensorFlow ops (no Python per step, so it stays off the training
    # step's critical path): each class's members as a padded row, stateless random draws
    # seeded by (seed, step), so a seed gives the same batches every run.
    width = max(per_class, max(len(members[c]) for c in eligible))
    pools = np.zeros((len(eligible), width), np.int64)
    for row, c in enumerate(eligible):
        pools[row, :len(members[c])] = members[c]
    pools_t = tf.constant(pools)
    pool_sizes = tf.constant([len(members[c]) for c in eligible], tf.int32)
    table = tf.constant(images)
    # Rotation k's source pixel for every output pixel (np.rot90 of the pixel indices: k
    # quarter turns counter-clockwise, as tf.image.rot90).
    side = images.shape[1]
    turn_pixels = tf.constant(np.stack([np.rot90(np.arange(side * side).reshape(side, side),
                                                 k).reshape(-1) for k in range(4)]))
    left_key, right_key = (features.transformed_name(k) for k in features.IMAGE_KEYS)
    base_seed = int(rng.integers(0, 2**31 - 1))

    def assemble(step: tf.Tensor) -> tuple[Any, tf.Tensor]:
        draws = tf.random.experimental.stateless_split(
            tf.stack([tf.constant(base_seed, tf.int64), step]), 3)
        # classes_per_batch distinct (class, rotation) variants.
        chosen = tf.argsort(tf.random.stateless_uniform([len(eligible) * variants], draws[0])
                            )[:classes_per_batch]
        row, turn = chosen % len(eligible), chosen // len(eligible)
        sizes = tf.gather(pool_sizes, row)[:, None]
        # K members of each: without replacement (the first K of a random order of its pool),
        # with replacement from a pool smaller than K.
        noise = tf.random.stateless_uniform([classes_per_batch, width], draws[1])
        order = tf.argsort(tf.where(tf.range(width)[None, :] < sizes, noise, 2.0),
                           axis=1)[:, :per_class]
        repeated = tf.cast(tf.random.stateless_uniform([classes_per_batch, per_class], draws[2])
                           * tf.cast(sizes, tf.float32), tf.int32)
        slots = tf.where(sizes < per_class, repeated, order)
        picked = tf.reshape(tf.gather(tf.gather(pools_t, row), slots, batch_dims=1), [-1])
        ids = tf.repeat(tf.cast(chosen, tf.int64), per_class)
        turns = tf.repeat(turn, per_class)
        batch = tf.gather(table, picked)
        if rotations:
            # Each image turned by its class's quarter turns in one gather of its pixels
            # (rotating the whole batch three times and selecting cost twice the CPU).
            flat = tf.reshape(batch, [per_class * classes_per_batch, side * side, -1])
            batch = tf.reshape(tf.gather(flat, tf.gather(turn_pixels, turns), batch_dims=1),
                               tf.shape(batch))
        # Consecutive images share a class (K of each): even ones left, odd ones right, so with
        # an even K every pair is a positive; the loss mines over all 2 * batch_size images.
        return ({left_key: batch[0::2], right_key: batch[1::2]},
                tf.stack([ids[0::2], ids[1::2]], axis=1))

    return (tf.data.Dataset.counter()
            .map(assemble, num_parallel_calls=tf.data.AUTOTUNE)
            .prefetch(tf.data.AUTOTUNE))
