"""keras.applications backbones in the Siamese network, at their minimum input size (marked
slow: they are large networks, but still part of the default run), and their weights files.

What the heads add on top of a backbone does not depend on which backbone it is (every own
backbone trains under every head in test_model_backbones.py), so each application trains under
one head by default, the four heads spread over the four applications;
SIAMESE_TFX_EVERY_HEAD_ON_APPLICATIONS=1 trains each under every head."""

import os

import backbone_checks as bc
import numpy as np
import pytest
import tensorflow as tf

from siamese_tfx.components.contract.config import BACKBONES, ImageConfig, ModelConfig
from siamese_tfx.components.trainer import backbones
from siamese_tfx.components.trainer import model as model_lib

APPLICATIONS = tuple(b for b in BACKBONES if b not in bc.OWN)
# The head each application trains under by default: every head once (mobilenet_v2, the one
# exported, under the pipeline's default head).
HEAD_OF = dict(zip(APPLICATIONS, bc.HEADS))


def test_every_head_trains_on_some_application():
    assert HEAD_OF["mobilenet_v2"] == ("euclidean", "contrastive")
    assert set(HEAD_OF.values()) == set(bc.HEADS)


@pytest.mark.slow
@pytest.mark.parametrize("backbone", APPLICATIONS)
def test_applications_build_train_two_steps_and_export(backbone, transform_graphs, tmp_path):
    """keras.applications at their minimum size: the backbone (the costly part to build) under
    its head (or every head), two eager training steps each (tracing these networks' training
    graphs costs over a minute on 2 cores), the Siamese outputs checked in memory. Exporting
    them costs a few minutes each on 2 shared cores, so one combination (mobilenet_v2,
    euclidean) is exported here; SIAMESE_TFX_EXPORT_ALL_APPLICATIONS=1 exports every one."""
    size = backbones.MIN_APPLICATION_SIZE[backbone]
    image = ImageConfig(height=size, width=size, channels=1)
    shared = backbones.build_backbone(image, ModelConfig(backbone=backbone,
                                                         embedding_dim=bc.EMBEDDING_DIM))
    every_head = os.environ.get("SIAMESE_TFX_EVERY_HEAD_ON_APPLICATIONS") == "1"
    export_all = os.environ.get("SIAMESE_TFX_EXPORT_ALL_APPLICATIONS") == "1"
    for head, loss in (bc.HEADS if every_head else [HEAD_OF[backbone]]):
        model_cfg = ModelConfig(backbone=backbone, head=head, loss=loss,
                                embedding_dim=bc.EMBEDDING_DIM)
        siamese, backbone_model = model_lib.build_siamese(image, model_cfg, backbone=shared)
        trainable = model_lib.training_model(siamese, model_cfg)
        trainable.compile(optimizer=tf.keras.optimizers.Adam(1e-3),
                          loss=model_lib.loss_for(model_cfg),
                          metrics=model_lib.metrics_for(model_cfg), run_eagerly=True)
        bc.train_two_steps(trainable)
        x, _ = bc.batch(size)
        distance = siamese(x, training=False).numpy()
        assert distance.shape == (4,) and (distance >= 0).all()
        if head != "euclidean":
            assert (distance < 1).all()
        if export_all or (backbone, head, loss) == ("mobilenet_v2", "euclidean", "contrastive"):
            bc.export_and_check(siamese, backbone_model, model_cfg, image, transform_graphs,
                                str(tmp_path / f"{head}-{loss}"))


def test_applications_take_greyscale_below_their_minimum_size():
    image = ImageConfig(height=16, width=16, channels=1)
    model = ModelConfig(backbone="mobilenet_v2", embedding_dim=bc.EMBEDDING_DIM)
    backbone = backbones.build_backbone(image, model)
    assert backbone.get_layer("resize_to_minimum").output_shape[1:3] == (32, 32)
    assert backbone.get_layer("grey_to_rgb").output_shape[-1] == 3
    out = backbone(np.zeros((2, 16, 16, 1), np.float32)).numpy()
    assert out.shape == (2, bc.EMBEDDING_DIM)


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
