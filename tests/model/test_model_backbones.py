"""Every backbone x head builds, trains two steps and exports the served contract.

Own backbones run on 16x16 greyscale images; keras.applications backbones at their minimum
input size (marked slow: they are large networks, but still part of the default run)."""

import os

import model_fixtures as fx
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft

from siamese_tfx.components.contract import features
from siamese_tfx.components.contract.config import BACKBONES, ImageConfig, ModelConfig
from siamese_tfx.components.trainer import backbones, export, heads
from siamese_tfx.components.trainer import model as model_lib
from siamese_tfx.components.trainer import train

HEADS = (("euclidean", "contrastive"), ("euclidean", "triplet"),
         ("l1_sigmoid", "binary_crossentropy"), ("matchnet", "binary_crossentropy"))
OWN = ("small_conv", "koch", "conv4", "vgg")
APPLICATIONS = tuple(b for b in BACKBONES if b not in OWN)
EMBEDDING_DIM = 8


@pytest.fixture(scope="session")
def transform_graphs(tmp_path_factory):
    """Transform graphs by image size, written once each."""
    graphs = {}

    def get(size: int) -> tft.TFTransformOutput:
        if size not in graphs:
            out = str(tmp_path_factory.mktemp(f"transform{size}"))
            fx.write_transform_graph(out, ImageConfig(height=size, width=size, channels=1))
            graphs[size] = tft.TFTransformOutput(out)
        return graphs[size]

    return get


def _check_contract(loaded, size: int) -> None:
    assert set(loaded.signatures) == {"serving_default", "compare", "embed"}
    images = fx.random_pngs(3, size=size + 3, seed=1)
    out = loaded.signatures["compare"](left_image=tf.constant(images),
                                       right_image=tf.constant(images[::-1]))
    distance, similarity = out["distance"].numpy(), out["similarity"].numpy()
    assert distance.dtype == np.float32 and distance.shape == (3,) and (distance >= 0).all()
    assert ((similarity >= 0) & (similarity <= 1)).all()
    np.testing.assert_array_equal(out["match"].numpy(), similarity >= 0.5)
    np.testing.assert_array_equal(out["match"].numpy(), distance <= 0.5)
    embedding = loaded.signatures["embed"](image=tf.constant(images))["embedding"].numpy()
    assert embedding.shape == (3, EMBEDDING_DIM)


def _batch(size: int):
    rng = np.random.default_rng(0)
    x = {features.transformed_name(k): rng.uniform(size=(4, size, size, 1)).astype(np.float32)
         for k in features.IMAGE_KEYS}
    return x, np.array([[1], [0], [1], [0]])


def _train_two_steps(trainable) -> None:
    x, y = _batch(trainable.inputs[0].shape[1])
    losses = [float(trainable.train_on_batch(x, y)[0]) for _ in range(2)]
    assert all(np.isfinite(losses)), losses


def _export_and_check(siamese, backbone_model, model_cfg, image, transform_graphs, path):
    export.export_model(siamese, backbone_model, transform_graphs(image.height), 0.5,
                        model_cfg.margin, path, image, "m",
                        heads.distance_scale(model_cfg.head, model_cfg.margin))
    assert os.path.exists(os.path.join(path, "assets.extra", "tf_serving_warmup_requests"))
    _check_contract(tf.saved_model.load(path), image.height)


@pytest.mark.parametrize("backbone", OWN)
@pytest.mark.parametrize("head,loss", HEADS, ids=[f"{h}-{l}" for h, l in HEADS])
def test_own_backbones_build_train_two_steps_and_export(backbone, head, loss, transform_graphs,
                                                        tmp_path):
    image = ImageConfig(height=16, width=16, channels=1)
    model_cfg = ModelConfig(backbone=backbone, head=head, loss=loss, embedding_dim=EMBEDDING_DIM)
    tf.keras.utils.set_random_seed(0)
    siamese, backbone_model, trainable = train.compile_for_training(
        tf.distribute.get_strategy(), image, model_cfg, 1e-3)
    _train_two_steps(trainable)
    _export_and_check(siamese, backbone_model, model_cfg, image, transform_graphs,
                      str(tmp_path / "model"))


@pytest.mark.slow
@pytest.mark.parametrize("backbone", APPLICATIONS)
def test_applications_build_and_train_two_steps_with_every_head(backbone, transform_graphs,
                                                                tmp_path):
    """keras.applications at their minimum size: one backbone (the costly part to build) under
    each head, two eager training steps each (tracing these networks' training graphs costs
    over a minute on 2 cores), the Siamese outputs checked in memory. Exporting them costs a few
    minutes each on 2 shared cores, so one combination (mobilenet_v2, euclidean) is exported
    here; SIAMESE_TFX_EXPORT_ALL_APPLICATIONS=1 exports every one."""
    size = backbones.MIN_APPLICATION_SIZE[backbone]
    image = ImageConfig(height=size, width=size, channels=1)
    shared = backbones.build_backbone(image, ModelConfig(backbone=backbone,
                                                         embedding_dim=EMBEDDING_DIM))
    export_all = os.environ.get("SIAMESE_TFX_EXPORT_ALL_APPLICATIONS") == "1"
    for head, loss in HEADS:
        model_cfg = ModelConfig(backbone=backbone, head=head, loss=loss,
                                embedding_dim=EMBEDDING_DIM)
        siamese, backbone_model = model_lib.build_siamese(image, model_cfg, backbone=shared)
        trainable = model_lib.training_model(siamese, model_cfg)
        trainable.compile(optimizer=tf.keras.optimizers.Adam(1e-3),
                          loss=model_lib.loss_for(model_cfg),
                          metrics=model_lib.metrics_for(model_cfg), run_eagerly=True)
        _train_two_steps(trainable)
        x, _ = _batch(size)
        distance = siamese(x, training=False).numpy()
        assert distance.shape == (4,) and (distance >= 0).all()
        if head != "euclidean":
            assert (distance < 1).all()
        if export_all or (backbone, head, loss) == ("mobilenet_v2", "euclidean", "contrastive"):
            _export_and_check(siamese, backbone_model, model_cfg, image, transform_graphs,
                              str(tmp_path / f"{head}-{loss}"))


def test_applications_take_greyscale_below_their_minimum_size():
    image = ImageConfig(height=16, width=16, channels=1)
    model = ModelConfig(backbone="mobilenet_v2", embedding_dim=EMBEDDING_DIM)
    backbone = backbones.build_backbone(image, model)
    assert backbone.get_layer("resize_to_minimum").output_shape[1:3] == (32, 32)
    assert backbone.get_layer("grey_to_rgb").output_shape[-1] == 3
    out = backbone(np.zeros((2, 16, 16, 1), np.float32)).numpy()
    assert out.shape == (2, EMBEDDING_DIM)


def test_missing_local_weights_file_is_refused_not_downloaded(tmp_path):
    model = ModelConfig(backbone="mobilenet_v2", backbone_weights=str(tmp_path / "none.h5"))
    with pytest.raises(ValueError, match="never downloaded"):
        backbones.build_backbone(ImageConfig(height=32, width=32), model)


def test_local_weights_file_is_loaded(tmp_path):
    image = ImageConfig(height=32, width=32, channels=3)
    base = tf.keras.applications.MobileNetV2(include_top=False, weights=None,
                                             input_shape=(32, 32, 3), pooling="avg")
    path = str(tmp_path / "mobilenet_v2_notop.h5")
    base.save_weights(path)
    model = ModelConfig(backbone="mobilenet_v2", backbone_weights=path, embedding_dim=4)
    loaded = backbones.build_backbone(image, model)
    inner = [layer for layer in loaded.layers if isinstance(layer, tf.keras.Model)][0]
    for a, b in zip(inner.get_weights(), base.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_pseudo_siamese_has_two_unshared_branches():
    image = ImageConfig(height=16, width=16, channels=1)
    shared, backbone = model_lib.build_siamese(image, ModelConfig(embedding_dim=8))
    pseudo, left = model_lib.build_siamese(
        image, ModelConfig(embedding_dim=8, shared_weights=False))
    assert pseudo.name == "pseudo_siamese" and shared.name == "siamese"
    assert pseudo.count_params() == 2 * shared.count_params()
    assert left.count_params() == backbone.count_params()
