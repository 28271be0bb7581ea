"""Losses and heads on hand-worked values. Label 1 = same identity, for every loss."""

import numpy as np
import pytest
import tensorflow as tf

from siamese_tfx.components.contract.config import ImageConfig, ModelConfig
from siamese_tfx.components.trainer import heads, losses
from siamese_tfx.components.trainer import model as model_lib


def test_binary_crossentropy_on_distance_hand_computed():
    # d = 1 - p(same). Same pair at d=0.1 costs -log(0.9); different pair at d=0.8 -log(0.8).
    loss = losses.DistanceBinaryCrossEntropy()(np.array([1.0, 0.0]), np.array([0.1, 0.8]))
    assert float(loss) == pytest.approx((-np.log(0.9) - np.log(0.8)) / 2, rel=1e-6)
    # The convention: label 1 at a small distance is cheap, label 0 there is dear.
    cheap = losses.DistanceBinaryCrossEntropy()(np.array([1.0]), np.array([0.05]))
    dear = losses.DistanceBinaryCrossEntropy()(np.array([0.0]), np.array([0.05]))
    assert float(cheap) < 0.06 < 2.9 < float(dear)


def test_semi_hard_triplet_loss_hand_computed():
    # 1-D embeddings; classes A = {0.0, 0.5}, B = {1.0, 3.0}; margin 1.
    # (a, p) -> chosen negative -> max(0, d_ap - d_an + 1):
    #   0.0, 0.5: semi-hard negatives farther than 0.5: 1.0 (d=1) -> 0.5
    #   0.5, 0.0: farther than 0.5: only 3.0 (d=2.5) -> 0
    #   1.0, 3.0: none farther than 2 -> farthest negative 0.0 (d=1) -> 2
    #   3.0, 1.0: farther than 2: 0.5 (d=2.5) -> 0.5          mean: 3 / 4 = 0.75
    classes = tf.constant([0, 0, 1, 1])
    embeddings = tf.constant([[0.0], [0.5], [1.0], [3.0]])
    value = losses.semi_hard_triplet_loss(classes, embeddings, 1.0)
    assert float(value) == pytest.approx(0.75, abs=1e-6)


def test_triplet_loss_takes_classes_from_pair_labels():
    # y_pred = [left | right] embeddings per pair.
    pairs = np.array([[0.0, 0.5], [1.0, 3.0]], np.float32)
    loss = losses.SemiHardTripletLoss(margin=1.0)
    # Both pairs same identity: the classes of the example above.
    assert float(loss(np.array([[1], [1]]), pairs)) == pytest.approx(0.75, abs=1e-6)
    # First pair different: 0.0 and 0.5 are classes of their own; only (1, 3) and (3, 1) remain:
    # (1, 3): nothing farther than 2 -> 0.0 at d=1 -> 2; (3, 1): 0.5 at 2.5 -> 0.5. Mean 1.25.
    assert float(loss(np.array([[0], [1]]), pairs)) == pytest.approx(1.25, abs=1e-6)
    # No same pair at all: no triplet, loss 0.
    assert float(loss(np.array([[0], [0]]), pairs)) == 0.0


def test_triplet_loss_takes_class_ids_of_a_class_batch():
    # y_true [B, 2]: the class ids of each pair's left and right image (a class batch).
    pairs = np.array([[0.0, 0.5], [1.0, 3.0]], np.float32)
    loss = losses.SemiHardTripletLoss(margin=1.0)
    # Images 0.0, 1.0 (left) and 0.5, 3.0 (right) with classes A, B, A, B: the example above.
    assert float(loss(np.array([[0, 0], [1, 1]]), pairs)) == pytest.approx(0.75, abs=1e-6)
    # Classes across pairs: 0.0 and 3.0 are A, 1.0 and 0.5 are B.
    # (0, 3): d=3, no negative farther -> the farthest, 1.0 (d=1) -> 3; (3, 0): none farther
    # than 3 -> the farthest, 0.5 (d=2.5) -> 1.5; (1, .5): d=.5, closest farther: 0.0 (d=1)
    # -> 0.5; (.5, 1): farther than .5: 3.0 (d=2.5) -> 0. Mean 5 / 4.
    assert float(loss(np.array([[0, 1], [1, 0]]), pairs)) == pytest.approx(1.25, abs=1e-6)
    metric = losses.PairAccuracy(threshold=1.0, from_embeddings=True)
    metric.update_state(np.array([[0, 0], [1, 2]]), pairs)  # same at 0.5, different at 2
    assert float(metric.result()) == 1.0


def test_pseudo_classes():
    classes = losses.pseudo_classes(tf.constant([1, 0, 1]), tf.constant(3)).numpy()
    np.testing.assert_array_equal(classes, [0, 1, 2, 0, 4, 2])


def test_pair_accuracy_at_a_fixed_cut():
    metric = losses.PairAccuracy(threshold=0.5)
    metric.update_state(np.array([1, 1, 0, 0]), np.array([0.2, 0.7, 0.4, 0.9]))
    assert float(metric.result()) == pytest.approx(0.5)
    from_embeddings = losses.PairAccuracy(threshold=1.0, from_embeddings=True)
    # Pair distances 0.5 (same: right) and 3 (different: right).
    from_embeddings.update_state(np.array([[1], [0]]), np.array([[0.0, 0.5], [0.0, 3.0]]))
    assert float(from_embeddings.result()) == 1.0


def test_best_cut_balanced_accuracy_hand_computed():
    # Sorted: same, same, different, different: the cut after the second is right for all.
    assert float(losses.best_cut_balanced_accuracy(
        tf.constant([0.1, 0.4, 0.3, 0.9]), tf.constant([1, 0, 1, 0]))) == 1.0
    # Sorted: same, different, same, different. Cut after k: k=1 -> (1/2 + 1) / 2 = 0.75,
    # k=2 -> 0.5, k=3 -> (1 + 1/2) / 2 = 0.75; k=0 and k=4 -> 0.5.
    assert float(losses.best_cut_balanced_accuracy(
        tf.constant([0.1, 0.2, 0.3, 0.4]), tf.constant([1, 0, 1, 0]))) == pytest.approx(0.75)


def _separable_class_batch(classes: int = 4, per_class: int = 4, spread: float = 0.2):
    """A class batch as class_batches.py hands it over (consecutive images share a class; even
    ones left, odd ones right): unit class centres 1.41 apart, each image within `spread` of
    its centre per coordinate, so same-class images lie about 0.4 apart."""
    rng = np.random.default_rng(0)
    dim = 8
    ids = np.repeat(np.arange(classes), per_class)
    images = np.eye(dim, dtype=np.float32)[ids] + rng.uniform(
        -spread, spread, (len(ids), dim)).astype(np.float32)
    y_true = np.stack([ids[0::2], ids[1::2]], axis=1)
    return y_true, np.concatenate([images[0::2], images[1::2]], axis=1)


def test_triplet_training_metric_is_high_on_a_separable_class_batch():
    # The Omniglot recipe's margin 0.5: same-class images about 0.4 apart, other classes 1.4.
    y_true, y_pred = _separable_class_batch()
    model_cfg = ModelConfig(loss="triplet", margin=0.5)
    assert float(model_lib.loss_for(model_cfg)(y_true, y_pred)) == 0.0  # nothing to learn
    metric = model_lib.metrics_for(model_cfg)[0]
    assert metric.name == "pair_accuracy"  # what the curves and the Keras log show
    metric.update_state(y_true, y_pred)
    assert float(metric.result()) == 1.0
    # A fixed cut at half the margin (the metric before) calls every one of these same pairs
    # different: 0 on a batch the model verifies perfectly.
    fixed = losses.PairAccuracy(0.25, from_embeddings=True)
    fixed.update_state(y_true, y_pred)
    assert float(fixed.result()) == 0.0
    # Shuffled classes: the batch's images no longer cluster by class, and the metric drops.
    shuffled = losses.BatchVerificationAccuracy()
    shuffled.update_state(np.random.default_rng(1).permutation(y_true.ravel()).reshape(-1, 2),
                          y_pred)
    assert float(shuffled.result()) < 0.8


def test_triplet_training_metric_on_labelled_pairs():
    # The eval split's pairs (label 1 = same): same pairs 0.5 apart, different ones 1 and 3.
    metric = model_lib.metrics_for(ModelConfig(loss="triplet", margin=0.2))[0]
    metric.update_state(np.array([[1], [0], [0]]),
                        np.array([[0.0, 0.5], [0.0, 3.0], [0.0, 1.0]], np.float32))
    assert float(metric.result()) == 1.0
    metric.update_state(np.array([[0], [1]]), np.array([[0.0, 0.5], [0.0, 3.0]], np.float32))
    # The second batch is reversed (the same pair the farther): no cut beats 0.5. Mean 0.75.
    assert float(metric.result()) == pytest.approx(0.75)


@pytest.mark.parametrize("loss", [losses.DistanceBinaryCrossEntropy(),
                                  losses.SemiHardTripletLoss(0.3)])
def test_losses_reload_from_config(loss):
    again = tf.keras.losses.deserialize(tf.keras.losses.serialize(loss))
    assert type(again) is type(loss) and again.get_config() == loss.get_config()


def test_l1_sigmoid_head_is_a_weighted_l1_with_one_logit():
    head = heads.L1SigmoidDistance()
    a, b = np.random.default_rng(0).normal(size=(2, 5, 8)).astype(np.float32)
    d = head([a, b]).numpy()
    kernel, bias = head.get_weights()
    expected = 1 / (1 + np.exp(np.abs(a - b) @ kernel + bias))
    np.testing.assert_allclose(d, expected.reshape(-1), rtol=1e-5)
    assert head.count_params() == 8 + 1 and ((d > 0) & (d < 1)).all()


def test_matchnet_head_is_symmetric_and_in_unit_interval():
    head = heads.MetricNetworkDistance(units=16)
    a, b = np.random.default_rng(1).normal(size=(2, 6, 8)).astype(np.float32)
    np.testing.assert_allclose(head([a, b]).numpy(), head([b, a]).numpy(), rtol=1e-6)
    d = head([a, b]).numpy()
    assert d.shape == (6,) and ((d > 0) & (d < 1)).all()


def test_heads_reload_from_config():
    for layer in (heads.L1SigmoidDistance(), heads.MetricNetworkDistance(units=7)):
        again = tf.keras.layers.deserialize(tf.keras.layers.serialize(layer))
        assert type(again) is type(layer) and again.get_config() == layer.get_config()


def test_siamese_with_probability_head_reloads_from_its_config(tmp_path):
    image = ImageConfig(height=16, width=16, channels=1)
    siamese, _ = model_lib.build_siamese(
        image, ModelConfig(head="matchnet", loss="binary_crossentropy", embedding_dim=4))
    path = str(tmp_path / "siamese.keras")  # Rebuilt from get_config: no Lambda, no closure.
    siamese.save(path)
    again = tf.keras.models.load_model(path)
    x = {name: np.random.default_rng(2).uniform(size=(2, 16, 16, 1)).astype(np.float32)
         for name in ("left_image_xf", "right_image_xf")}
    np.testing.assert_allclose(again(x).numpy(), siamese(x).numpy(), rtol=1e-5)


def test_head_and_loss_must_fit():
    with pytest.raises(ValueError, match="cannot train with"):
        ModelConfig(head="l1_sigmoid", loss="contrastive")
    with pytest.raises(ValueError, match="cannot train with"):
        ModelConfig(head="euclidean", loss="binary_crossentropy")


def _triplet_loss_by_every_triplet(classes, embeddings, margin):
    """The loss's definition written out over every (a, p, n) triplet: the reference the
    sorted mining must equal, in value and gradient."""
    embeddings = tf.cast(embeddings, tf.float32)
    dist = tf.sqrt(tf.maximum(tf.reduce_sum(
        tf.square(embeddings[:, None, :] - embeddings[None, :, :]), -1), 1e-12))
    same = tf.equal(classes[:, None], classes[None, :])
    n = tf.shape(classes)[0]
    positive = tf.logical_and(same, tf.logical_not(tf.eye(n, dtype=tf.bool)))
    negative = tf.logical_not(same)
    d_ap, d_an = dist[:, :, None], dist[:, None, :]
    semi_hard = tf.logical_and(negative[:, None, :], d_an > d_ap)
    closest = tf.reduce_min(tf.where(semi_hard, d_an, tf.reduce_max(dist) + 1.0), axis=2)
    farthest = tf.reduce_max(tf.where(negative, dist, 0.0), axis=1)[:, None]
    chosen = tf.where(tf.reduce_any(semi_hard, axis=2), closest, farthest)
    valid = tf.logical_and(positive, tf.reduce_any(negative, axis=1)[:, None])
    per_pair = tf.maximum(dist - chosen + margin, 0.0)
    return (tf.reduce_sum(tf.where(valid, per_pair, 0.0))
            / tf.maximum(tf.reduce_sum(tf.cast(valid, tf.float32)), 1.0))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_semi_hard_triplet_loss_equals_every_triplet_reference(seed):
    # A class batch as the Trainer builds it (16 classes x 4 images, unit-norm embeddings),
    # and with seed 2 one class alone (an anchor with no negative contributes nothing).
    rng = np.random.default_rng(seed)
    classes = tf.constant(np.zeros(8, np.int64) if seed == 2 else np.repeat(np.arange(16), 4))
    raw = rng.normal(size=(int(classes.shape[0]), 32)).astype(np.float32)
    embeddings = tf.Variable(raw / np.linalg.norm(raw, axis=1, keepdims=True))
    values, gradients = [], []
    for loss_fn in (losses.semi_hard_triplet_loss, _triplet_loss_by_every_triplet):
        with tf.GradientTape() as tape:
            value = loss_fn(classes, embeddings, 0.5)
        values.append(float(value))
        gradients.append(tape.gradient(value, embeddings).numpy())
    assert values[0] == pytest.approx(values[1], abs=1e-5)
    np.testing.assert_allclose(gradients[0], gradients[1], atol=1e-4)
    if seed != 2:
        assert values[0] > 0.0 and np.abs(gradients[0]).max() > 0.0
