"""Every own backbone x head builds and trains two steps; each backbone and each head exports
the served contract (tests/model/test_model_applications.py: keras.applications backbones).

Own backbones run on 16x16 greyscale images. The export (signatures, warmup requests, a reload
and its answers) costs more than building and training, and what it depends on is the head (its
distance scale and outputs) and the backbone's graph separately, so the default run exports
four combinations that pair each backbone with a different head;
SIAMESE_TFX_EXPORT_ALL_BACKBONES=1 exports all sixteen."""

import os

import backbone_checks as bc
import numpy as np
import pytest
import tensorflow as tf

from siamese_tfx.components.contract.config import ImageConfig, ModelConfig
from siamese_tfx.components.trainer import model as model_lib
from siamese_tfx.components.trainer import train

# (backbone, head) pairs exported by default: every backbone with a different head.
EXPORTED = {(backbone, *head) for backbone, head in zip(bc.OWN, bc.HEADS)}


@pytest.mark.parametrize("backbone", bc.OWN)
@pytest.mark.parametrize("head,loss", bc.HEADS, ids=[f"{h}-{l}" for h, l in bc.HEADS])
def test_own_backbones_build_train_two_steps_and_export(backbone, head, loss, transform_graphs,
                                                        tmp_path):
    image = ImageConfig(height=16, width=16, channels=1)
    model_cfg = ModelConfig(backbone=backbone, head=head, loss=loss,
                            embedding_dim=bc.EMBEDDING_DIM)
    tf.keras.utils.set_random_seed(0)
    siamese, backbone_model, trainable = train.compile_for_training(
        tf.distribute.get_strategy(), image, model_cfg, 1e-3)
    bc.train_two_steps(trainable)
    x, _ = bc.batch(image.height)
    distance = siamese(x, training=False).numpy()
    assert distance.shape == (4,) and np.isfinite(distance).all() and (distance >= 0).all()
    if ((backbone, head, loss) in EXPORTED
            or os.environ.get("SIAMESE_TFX_EXPORT_ALL_BACKBONES") == "1"):
        bc.export_and_check(siamese, backbone_model, model_cfg, image, transform_graphs,
                          str(tmp_path / "model"))


def test_the_exported_combinations_cover_every_backbone_and_every_head():
    assert {b for b, _, _ in EXPORTED} == set(bc.OWN)
    assert {(h, l) for _, h, l in EXPORTED} == set(bc.HEADS)


def test_pseudo_siamese_has_two_unshared_branches():
    image = ImageConfig(height=16, width=16, channels=1)
    shared, backbone = model_lib.build_siamese(image, ModelConfig(embedding_dim=8))
    pseudo, left = model_lib.build_siamese(
        image, ModelConfig(embedding_dim=8, shared_weights=False))
    assert pseudo.name == "pseudo_siamese" and shared.name == "siamese"
    assert pseudo.count_params() == 2 * shared.count_params()
    assert left.count_params() == backbone.count_params()
