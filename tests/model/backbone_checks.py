"""What the backbone tests check of every backbone x head: two training steps and the exported
contract (tests/model/test_model_backbones.py, test_model_applications.py)."""

import os

import model_fixtures as fx
import numpy as np
import tensorflow as tf

from siamese_tfx.components.contract import features
from siamese_tfx.components.trainer import export, heads

HEADS = (("euclidean", "contrastive"), ("euclidean", "triplet"),
         ("l1_sigmoid", "binary_crossentropy"), ("matchnet", "binary_crossentropy"))
OWN = ("small_conv", "koch", "conv4", "vgg")  # the project's own backbones
EMBEDDING_DIM = 8


def check_contract(loaded, size: int) -> None:
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


def batch(size: int):
    rng = np.random.default_rng(0)
    x = {features.transformed_name(k): rng.uniform(size=(4, size, size, 1)).astype(np.float32)
         for k in features.IMAGE_KEYS}
    return x, np.array([[1], [0], [1], [0]])


def train_two_steps(trainable) -> None:
    x, y = batch(trainable.inputs[0].shape[1])
    losses = [float(trainable.train_on_batch(x, y)[0]) for _ in range(2)]
    assert all(np.isfinite(losses)), losses


def export_and_check(siamese, backbone_model, model_cfg, image, transform_graphs, path):
    export.export_model(siamese, backbone_model, transform_graphs(image.height), 0.5,
                        model_cfg.margin, path, image, "m",
                        heads.distance_scale(model_cfg.head, model_cfg.margin))
    assert os.path.exists(os.path.join(path, "assets.extra", "tf_serving_warmup_requests"))
    check_contract(tf.saved_model.load(path), image.height)
