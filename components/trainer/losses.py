"""Losses of the Siamese heads, registered so a SavedModel reloads without custom objects."""

from __future__ import annotations

from typing import Any

import tensorflow as tf

keras = tf.keras

_CLIP = 1e-7


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


@keras.utils.register_keras_serializable(package="siamese_tfx")
class DistanceBinaryCrossEntropy(keras.losses.Loss):
    """Binary cross-entropy for the probability heads (l1_sigmoid, matchnet).

    y_true is the pair label: **1 = same identity, 0 = different**. y_pred is the head's
    distance d = 1 - p(same), in (0, 1). Per pair:
        -[y * log(1 - d) + (1 - y) * log(d)]
    with d clipped to [1e-7, 1 - 1e-7], and the mean over the batch.
    """

    def __init__(self, name: str = "distance_binary_crossentropy", **kwargs: Any):
        super().__init__(name=name, **kwargs)

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        distance = tf.clip_by_value(tf.reshape(tf.cast(y_pred, tf.float32), [-1]),
                                    _CLIP, 1.0 - _CLIP)
        same = tf.reshape(tf.cast(y_true, tf.float32), [-1])
        return -(same * tf.math.log(1.0 - distance) + (1.0 - same) * tf.math.log(distance))


def pseudo_classes(labels: tf.Tensor, batch: tf.Tensor) -> tf.Tensor:
    """Class ids of the 2B images of B pairs (left images first, then right): pair i's left
    image is class i; its right image is class i too when label_i = 1 (same identity), else
    class B + i. Two pairs that happen to share a class are taken as different classes."""
    index = tf.range(batch)
    same = tf.cast(tf.reshape(labels, [-1]), tf.bool)
    return tf.concat([index, tf.where(same, index, index + batch)], axis=0)


def pairwise_distances(embeddings: tf.Tensor) -> tf.Tensor:
    """[n, dim] -> [n, n] Euclidean distances, from one matrix product (|a|^2 + |b|^2 - 2ab):
    no [n, n, dim] difference tensor, which at the Trainer's 256 images of 128 dims cost more
    than the product, forward and backward. Clipped at 1e-6 (squared 1e-12): the diagonal's
    gradient is then zero, not infinite."""
    embeddings = tf.cast(embeddings, tf.float32)
    norms = tf.reduce_sum(tf.square(embeddings), -1)
    squared = norms[:, None] + norms[None, :] - 2.0 * tf.matmul(embeddings, embeddings,
                                                                 transpose_b=True)
    return tf.sqrt(tf.maximum(squared, 1e-12))


def semi_hard_triplet_loss(classes: tf.Tensor, embeddings: tf.Tensor,
                           margin: float) -> tf.Tensor:
    """Triplet loss with online semi-hard negative mining (Schroff et al. 2015, FaceNet).

    For every anchor a and positive p (same class, a != p) in the batch, the negative n is the
    closest one FARTHER than p (semi-hard: d(a,p) < d(a,n)); when there is none, the farthest
    negative. Loss per (a, p): max(0, d(a,p) - d(a,n) + margin), Euclidean distances; the mean
    over all (a, p), 0 when the batch has no positive.

    Mining sorts each anchor's negatives once and finds, for every positive, the first negative
    farther than it by binary search: O(n^2 log n), where comparing every (a, p, n) triplet was
    an [n, n, n] tensor (16.7 M values a step at 256 images).
    """
    dist = pairwise_distances(embeddings)
    classes = tf.reshape(classes, [-1])
    same = tf.equal(classes[:, None], classes[None, :])
    n = tf.shape(classes)[0]
    positive = tf.logical_and(same, tf.logical_not(tf.eye(n, dtype=tf.bool)))
    negative = tf.logical_not(same)
    negative_count = tf.reduce_sum(tf.cast(negative, tf.int32), axis=1)
    # Each anchor's negatives in ascending distance (the other entries, past the largest
    # distance, sort last); [a, p] -> the index of the first negative of a farther than p.
    big = tf.stop_gradient(tf.reduce_max(dist)) + 1.0
    negatives = tf.where(negative, dist, big)
    ascending = tf.gather(negatives, tf.argsort(negatives, axis=1), batch_dims=1)
    first_farther = tf.searchsorted(tf.stop_gradient(ascending), tf.stop_gradient(dist),
                                    side="right", out_type=tf.int32)
    has_semi_hard = first_farther < negative_count[:, None]
    closest_semi_hard = tf.gather(ascending, tf.minimum(first_farther, n - 1), batch_dims=1)
    farthest_negative = tf.reduce_max(tf.where(negative, dist, 0.0), axis=1)[:, None]
    chosen = tf.where(has_semi_hard, closest_semi_hard, farthest_negative)
    per_pair = tf.maximum(dist - chosen + margin, 0.0)
    # Anchors with no negative at all contribute nothing.
    valid = tf.logical_and(positive, (negative_count > 0)[:, None])
    count = tf.reduce_sum(tf.cast(valid, tf.float32))
    return tf.reduce_sum(tf.where(valid, per_pair, 0.0)) / tf.maximum(count, 1.0)


def is_class_ids(y_true: tf.Tensor) -> bool:
    """Whether y_true is [B, 2] class ids (left, right) rather than pair labels ([B] or
    [B, 1]); decided on the static shape."""
    shape = tf.TensorShape(y_true.shape)
    return shape.rank == 2 and shape[-1] == 2


@keras.utils.register_keras_serializable(package="siamese_tfx")
class SemiHardTripletLoss(keras.losses.Loss):
    """Triplet loss with online semi-hard mining over a batch of pairs (see
    `semi_hard_triplet_loss`).

    y_true is either the pair label: **1 = same identity, 0 = different**, which assigns the 2B
    images of the batch to classes (`pseudo_classes`: a same pair's two images form one class,
    every other image its own); or, for the Trainer's class batches (`class_batches.py`), the
    images' class ids, [B, 2] (left, right). y_pred is [B, 2 * dim]: each pair's left and
    right embeddings, concatenated.
    Returns one value for the whole batch.
    """

    def __init__(self, margin: float = 1.0, name: str = "semi_hard_triplet_loss",
                 **kwargs: Any):
        super().__init__(name=name, **kwargs)
        self.margin = float(margin)

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        left, right = tf.split(tf.cast(y_pred, tf.float32), 2, axis=-1)
        if is_class_ids(y_true):  # A class batch: the images' own class ids.
            y_true = tf.convert_to_tensor(y_true)
            classes = tf.concat([y_true[:, 0], y_true[:, 1]], axis=0)
        else:
            classes = pseudo_classes(y_true, tf.shape(left)[0])
        return semi_hard_triplet_loss(classes, tf.concat([left, right], 0), self.margin)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "margin": self.margin}


@keras.utils.register_keras_serializable(package="siamese_tfx")
class PairAccuracy(keras.metrics.Mean):
    """Share of pairs decided right at a FIXED distance cut (match: d <= threshold); label 1 =
    same identity (or [B, 2] class ids of a class batch). With `from_embeddings`, y_pred is
    [B, 2 * dim] (the triplet model's output)
    and d is the Euclidean distance of its halves. A training-curve proxy only: the served
    threshold is calibrated after training."""

    def __init__(self, threshold: float = 0.5, from_embeddings: bool = False,
                 name: str = "pair_accuracy", **kwargs: Any):
        super().__init__(name=name, **kwargs)
        self.threshold = float(threshold)
        self.from_embeddings = bool(from_embeddings)

    def update_state(self, y_true: tf.Tensor, y_pred: tf.Tensor,
                     sample_weight: Any = None) -> Any:
        y_pred = tf.cast(y_pred, tf.float32)
        if self.from_embeddings:
            left, right = tf.split(y_pred, 2, axis=-1)
            distance = tf.norm(left - right, axis=-1)
        else:
            distance = tf.reshape(y_pred, [-1])
        if is_class_ids(y_true):  # A class batch: same identity = same class id.
            y_true = tf.convert_to_tensor(y_true)
            same = tf.equal(y_true[:, 0], y_true[:, 1])
        else:
            same = tf.reshape(tf.cast(y_true, tf.bool), [-1])
        correct = tf.cast(tf.equal(distance <= self.threshold, same), tf.float32)
        return super().update_state(correct, sample_weight=sample_weight)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "threshold": self.threshold,
                "from_embeddings": self.from_embeddings}


def best_cut_balanced_accuracy(distances: tf.Tensor, same: tf.Tensor) -> tf.Tensor:
    """The best balanced accuracy (mean of the same-pair and different-pair accuracies) any
    distance cut reaches on these pairs (match: distance <= cut); a side with no pair counts as
    decided right. `distances` and `same` are [N]."""
    distances = tf.reshape(tf.cast(distances, tf.float32), [-1])
    same = tf.reshape(tf.cast(same, tf.float32), [-1])
    ordered = tf.gather(same, tf.argsort(distances))
    positives = tf.reduce_sum(ordered)
    negatives = tf.cast(tf.size(ordered), tf.float32) - positives
    # Cut after the k closest pairs, k = 0..N: k matches, of which true_matches are same pairs.
    true_matches = tf.concat([[0.0], tf.cumsum(ordered)], axis=0)
    false_matches = tf.range(tf.size(true_matches), dtype=tf.float32) - true_matches
    same_right = tf.where(positives > 0, true_matches / tf.maximum(positives, 1.0), 1.0)
    different_right = tf.where(negatives > 0,
                               1.0 - false_matches / tf.maximum(negatives, 1.0), 1.0)
    return tf.reduce_max(0.5 * (same_right + different_right))


@keras.utils.register_keras_serializable(package="siamese_tfx")
class BatchVerificationAccuracy(keras.metrics.Mean):
    """The triplet loss's training metric (reported as `pair_accuracy`): the verification
    accuracy of each batch at its best cut, balanced (`best_cut_balanced_accuracy`), averaged
    over batches. The triplet loss fixes no distance for a match (only that negatives lie
    `margin` farther than positives), so a fixed cut says nothing; the best cut is what the
    Trainer's calibration picks after training, here on one batch.

    y_pred is [B, 2 * dim] (each pair's left and right embeddings). y_true is either the pair
    label (**1 = same identity**): the B pairs are judged; or a class batch's [B, 2] class ids:
    every pair of its 2B images is judged (same identity = same class id), as the loss mines
    over all of them."""

    def __init__(self, name: str = "pair_accuracy", **kwargs: Any):
        super().__init__(name=name, **kwargs)

    def update_state(self, y_true: tf.Tensor, y_pred: tf.Tensor,
                     sample_weight: Any = None) -> Any:
        left, right = tf.split(tf.cast(y_pred, tf.float32), 2, axis=-1)
        if is_class_ids(y_true):
            y_true = tf.convert_to_tensor(y_true)
            classes = tf.concat([y_true[:, 0], y_true[:, 1]], axis=0)
            embeddings = tf.concat([left, right], axis=0)
            n = tf.shape(classes)[0]
            upper = tf.linalg.band_part(tf.ones([n, n], tf.bool), 0, -1)
            upper = tf.logical_and(upper, tf.logical_not(tf.eye(n, dtype=tf.bool)))
            distance = tf.boolean_mask(pairwise_distances(embeddings), upper)
            same = tf.boolean_mask(tf.equal(classes[:, None], classes[None, :]), upper)
        else:
            distance = tf.norm(left - right, axis=-1)
            same = tf.reshape(tf.cast(y_true, tf.bool), [-1])
        return super().update_state(best_cut_balanced_accuracy(distance, same),
                                    sample_weight=sample_weight)
