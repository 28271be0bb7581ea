"""Ensembles (ModelConfig.ensemble_members): independently trained backbones served as one
embedding whose distance is the root mean square of the members' distances, and the finished
members a restarted Trainer restores instead of training again."""

import os

import model_fixtures as fx
import numpy as np
import pytest
import tensorflow as tf

from siamese_tfx.components.contract import features
from siamese_tfx.components.contract.config import ImageConfig, ModelConfig
from siamese_tfx.components.trainer import export, heads
from siamese_tfx.components.trainer import model as model_lib
from siamese_tfx.components.trainer import train

IMAGE = ImageConfig(height=16, width=16, channels=1)
DIM = 8


def _members(count: int, model_cfg: ModelConfig) -> list[tf.keras.Model]:
    backbones = []
    for index in range(count):
        tf.keras.utils.set_random_seed(index)
        _, backbone = model_lib.build_siamese(IMAGE, model_cfg,
                                              backbone_name=f"conv4_member_{index}")
        backbones.append(backbone)
    return backbones


def _pairs(count: int = 6):
    rng = np.random.default_rng(3)
    return {features.transformed_name(k): rng.uniform(size=(count, 16, 16, 1)).astype(np.float32)
            for k in features.IMAGE_KEYS}


def test_ensemble_distance_is_the_root_mean_square_of_the_members_distances():
    model_cfg = ModelConfig(backbone="conv4", embedding_dim=DIM, loss="triplet",
                            ensemble_members=3)
    members = _members(3, model_cfg)
    siamese, backbone = model_lib.build_ensemble(IMAGE, model_cfg, members)
    pairs = _pairs()
    left, right = (pairs[features.transformed_name(k)] for k in features.IMAGE_KEYS)
    member_distances = np.stack([
        np.linalg.norm(m(left).numpy() - m(right).numpy(), axis=-1) for m in members])
    assert np.ptp(member_distances, axis=0).max() > 1e-3  # the members really differ
    np.testing.assert_allclose(siamese(pairs).numpy(),
                               np.sqrt(np.mean(member_distances ** 2, axis=0)), rtol=1e-5)
    embedding = backbone(left).numpy()
    assert embedding.shape == (6, 3 * DIM)
    np.testing.assert_allclose(np.linalg.norm(embedding, axis=-1), 1.0, rtol=1e-5)
    # Its weights are exactly the members': the ensemble adds none.
    assert len(siamese.trainable_weights) == sum(len(m.trainable_weights) for m in members)


def test_exported_ensemble_serves_the_contract_and_reloads_without_custom_objects(
        tmp_path):
    model_cfg = ModelConfig(backbone="conv4", embedding_dim=DIM, ensemble_members=2)
    siamese, backbone = model_lib.build_ensemble(IMAGE, model_cfg, _members(2, model_cfg))
    graph = str(tmp_path / "transform")
    fx.write_transform_graph(graph, IMAGE)
    import tensorflow_transform as tft

    path = str(tmp_path / "model")
    export.export_model(siamese, backbone, tft.TFTransformOutput(graph), 0.7, model_cfg.margin,
                        path, IMAGE, "m", heads.distance_scale(model_cfg.head, model_cfg.margin))
    loaded = tf.saved_model.load(path)
    images = fx.random_pngs(4, size=19, seed=2)
    out = loaded.signatures["compare"](left_image=tf.constant(images[:2]),
                                       right_image=tf.constant(images[2:]))
    embedding = loaded.signatures["embed"](image=tf.constant(images))["embedding"].numpy()
    assert embedding.shape == (4, 2 * DIM)
    np.testing.assert_allclose(np.linalg.norm(embedding[:2] - embedding[2:], axis=-1),
                               out["distance"].numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(out["match"].numpy(), out["distance"].numpy() <= 0.7)
    reloaded = tf.keras.models.load_model(path, compile=False)
    assert reloaded.get_layer("conv4_ensemble").get_layer("ensemble_embedding") is not None


def test_finished_member_is_restored_not_retrained(tmp_path):
    model_cfg = ModelConfig(backbone="conv4", embedding_dim=DIM, ensemble_members=2)
    trained, fresh = _members(2, model_cfg)
    directory = train.member_dir(str(tmp_path), 1, 2)
    assert directory == os.path.join(str(tmp_path), "member_1")
    assert train.member_dir(str(tmp_path), 0, 1) == str(tmp_path)
    assert train.restore_finished(fresh, directory) is None  # not finished: nothing loaded
    record = {"final_train_loss": 0.25, "train_classes": 17, "train_split_classes": 20}
    train.save_finished(trained, directory, record)
    before = [w.numpy().copy() for w in fresh.weights]
    assert train.restore_finished(fresh, directory) == record
    assert any(not np.array_equal(b, w.numpy()) for b, w in zip(before, fresh.weights))
    for expected, restored in zip(trained.weights, fresh.weights):
        np.testing.assert_array_equal(expected.numpy(), restored.numpy())


def test_half_written_member_counts_as_unfinished(tmp_path):
    """The loss file is written after the weights: weights alone mean the save was cut off."""
    model_cfg = ModelConfig(backbone="conv4", embedding_dim=DIM)
    (backbone,) = _members(1, model_cfg)
    directory = str(tmp_path / "member_0")
    train.save_finished(backbone, directory, {"final_train_loss": 0.5})
    os.remove(os.path.join(directory, train.FINISHED_SUBDIR, "member.json"))
    assert train.restore_finished(backbone, directory) is None


@pytest.mark.parametrize("overrides", [
    {"head": "l1_sigmoid", "loss": "binary_crossentropy"},
    {"head": "matchnet", "loss": "binary_crossentropy"},
    {"shared_weights": False},
])
def test_ensemble_needs_the_euclidean_head_and_shared_weights(overrides):
    with pytest.raises(ValueError, match="ensemble_members 2 needs the euclidean head"):
        ModelConfig(ensemble_members=2, **overrides)
    ModelConfig(ensemble_members=1, **overrides)  # a single model takes any of them


def test_ensemble_members_must_be_positive():
    with pytest.raises(ValueError, match="ensemble_members must be >= 1"):
        ModelConfig(ensemble_members=0)


@pytest.mark.parametrize("overrides, message", [
    (dict(ensemble_class_fraction=0.0), "must be in \\(0, 1\\]"),
    (dict(ensemble_class_fraction=1.5), "must be in \\(0, 1\\]"),
    (dict(ensemble_members=1, loss="triplet", ensemble_class_fraction=0.8), "needs an ensemble"),
    (dict(ensemble_members=2, loss="contrastive", ensemble_class_fraction=0.8),
     "trained with the triplet loss"),
])
def test_ensemble_class_fraction_is_checked(overrides, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig(**overrides)
    ModelConfig(ensemble_members=2, loss="triplet", ensemble_class_fraction=0.8)
