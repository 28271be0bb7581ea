"""The two branches are ONE backbone: one set of weights, moved identically by training."""

import numpy as np
import tensorflow as tf

from siamese_tfx.components.contract import features
from siamese_tfx.components.contract.config import ImageConfig, ModelConfig
from siamese_tfx.components.trainer import losses
from siamese_tfx.components.trainer import model as model_lib

IMAGE = ImageConfig(height=16, width=16, channels=1)
MODEL = ModelConfig(embedding_dim=8)
LEFT = features.transformed_name(features.LEFT_IMAGE)
RIGHT = features.transformed_name(features.RIGHT_IMAGE)


def _batch(n=8, seed=0):
    rng = np.random.default_rng(seed)
    return {
        LEFT: rng.uniform(size=(n, 16, 16, 1)).astype(np.float32),
        RIGHT: rng.uniform(size=(n, 16, 16, 1)).astype(np.float32),
    }, rng.integers(0, 2, (n, 1))


def test_parameter_count_is_backbone_plus_head():
    siamese, backbone = model_lib.build_siamese(IMAGE, MODEL)
    head_params = 0  # The Euclidean-distance head has no weights.
    assert siamese.count_params() == backbone.count_params() + head_params
    assert len(siamese.trainable_variables) == len(backbone.trainable_variables)
    assert {id(v) for v in siamese.trainable_variables} == {
        id(v) for v in backbone.trainable_variables}


def test_one_training_step_moves_both_branches_identically():
    tf.keras.utils.set_random_seed(0)
    siamese, backbone = model_lib.build_siamese(IMAGE, MODEL)
    siamese.compile(optimizer=tf.keras.optimizers.SGD(0.5), loss=losses.ContrastiveLoss())
    x, y = _batch()
    probe = _batch(4, seed=1)[0][LEFT]
    left_branch = tf.keras.Model(siamese.get_layer(LEFT).input,
                                 backbone(siamese.get_layer(LEFT).input))
    right_branch = tf.keras.Model(siamese.get_layer(RIGHT).input,
                                  backbone(siamese.get_layer(RIGHT).input))
    before = backbone(probe).numpy()
    weights_before = [w.copy() for w in backbone.get_weights()]
    siamese.train_on_batch(x, y)
    after_left, after_right = left_branch(probe).numpy(), right_branch(probe).numpy()
    assert not np.allclose(before, after_left), "the step did not move the weights"
    np.testing.assert_array_equal(after_left, after_right)
    moved = [not np.array_equal(a, b) for a, b in zip(weights_before, backbone.get_weights())]
    assert all(moved), "every backbone weight gets a gradient from the pair loss"


def test_distance_is_euclidean_between_embeddings():
    siamese, backbone = model_lib.build_siamese(IMAGE, MODEL)
    x, _ = _batch(5)
    d = siamese(x).numpy()
    e_left, e_right = backbone(x[LEFT]).numpy(), backbone(x[RIGHT]).numpy()
    np.testing.assert_allclose(d, np.linalg.norm(e_left - e_right, axis=1), atol=1e-5)
    assert d.shape == (5,) and (d >= 0).all()
    np.testing.assert_allclose(np.linalg.norm(e_left, axis=1), 1.0, atol=1e-5)


def test_training_model_runs_the_backbone_once_on_the_stacked_pairs():
    for loss, head in (("contrastive", "euclidean"), ("triplet", "euclidean"),
                       ("binary_crossentropy", "l1_sigmoid")):
        model_cfg = ModelConfig(embedding_dim=8, loss=loss, head=head)
        siamese, backbone = model_lib.build_siamese(IMAGE, model_cfg)
        trainable = model_lib.training_model(siamese, model_cfg, backbone)
        x, _ = _batch()
        # One call of the backbone, on the 2B images (left then right).
        calls = [n for n in trainable.get_config()["layers"] if n["name"] == backbone.name]
        assert len(calls) == 1 and len(calls[0]["inbound_nodes"]) == 1
        embeddings = np.concatenate([backbone(x[LEFT], training=False).numpy(),
                                     backbone(x[RIGHT], training=False).numpy()], axis=1)
        out = trainable(x, training=False).numpy()
        if loss == "triplet":
            np.testing.assert_allclose(out, embeddings, atol=1e-5)
        else:  # The Siamese model's own distance.
            np.testing.assert_allclose(out, siamese(x, training=False).numpy(), atol=1e-5)
        assert {id(v) for v in trainable.trainable_variables} == {
            id(v) for v in siamese.trainable_variables}
