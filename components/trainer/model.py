"""The Siamese network: ONE backbone called on both images, and a distance head.

Both branches are the same Keras model object, so they share one set of weights: the Siamese
model's parameter count is the backbone's plus the head's (the Euclidean head has none). With
`ModelConfig.shared_weights=False` it is instead a PSEUDO-Siamese network (two backbones with
their own weights), built only to compare against. With `ModelConfig.ensemble_members > 1` the
Trainer trains that many Siamese networks and `build_ensemble` joins their backbones into the
one backbone of the served Siamese model.

Backbones are in `backbones.py`, heads in `heads.py`, losses in `losses.py`.
"""

from __future__ import annotations

from typing import Optional

import tensorflow as tf

from siamese_tfx.components.contract import features, signatures
from siamese_tfx.components.contract.config import ImageConfig, ModelConfig
from siamese_tfx.components.trainer import heads, losses
from siamese_tfx.components.trainer.backbones import build_backbone
from siamese_tfx.components.trainer.layers import (ConcatEmbeddings, EnsembleEmbedding,
                                                   EuclideanDistance, L2Normalize, StackPairs,
                                                   UnstackPairs)

keras = tf.keras

__all__ = ["EuclideanDistance", "L2Normalize", "build_backbone", "build_siamese",
           "build_ensemble", "training_model", "loss_for", "metrics_for"]


def build_siamese(image: ImageConfig, model: ModelConfig,
                  backbone: Optional[keras.Model] = None,
                  backbone_name: str = "") -> tuple[keras.Model, keras.Model]:
    """Returns (siamese, backbone). The Siamese model maps the transformed image features
    {left_image_xf, right_image_xf} to the head's distance, [batch] (>= 0, larger = less
    similar). `backbone` embeds one image (the left branch's, for a pseudo-Siamese network);
    pass one to reuse an existing embedding network (Siamese only). `backbone_name` renames a
    new (Siamese) backbone, e.g. an ensemble member's."""
    shape = (image.height, image.width, image.channels)
    inputs = {
        features.transformed_name(key): keras.Input(shape, name=features.transformed_name(key))
        for key in features.IMAGE_KEYS
    }
    left, right = (inputs[features.transformed_name(key)] for key in features.IMAGE_KEYS)
    if model.shared_weights:
        backbone = right_backbone = backbone or build_backbone(image, model, name=backbone_name)
        name = "siamese"
    else:
        backbone = build_backbone(image, model, name=f"{model.backbone}_left")
        right_backbone = build_backbone(image, model, name=f"{model.backbone}_right")
        name = "pseudo_siamese"
    distance = heads.build_head(model.head, signatures.DISTANCE)(
        [backbone(left), right_backbone(right)])
    return keras.Model(inputs, distance, name=name), backbone


def build_ensemble(image: ImageConfig, model: ModelConfig,
                   backbones: list[keras.Model]) -> tuple[keras.Model, keras.Model]:
    """(siamese, backbone) of an ensemble: the backbone embeds an image with every member's
    backbone (`EnsembleEmbedding`: concatenated, scaled by 1/sqrt(members)), and the Siamese
    model is `build_siamese`'s euclidean head on it, so its distance is the root mean square of
    the members' distances. The members' backbones need distinct names."""
    if model.head != "euclidean" or not model.shared_weights:
        raise ValueError("an ensemble needs the euclidean head and shared weights")
    inputs = keras.Input((image.height, image.width, image.channels), name="image")
    embedding = EnsembleEmbedding(name="ensemble_embedding")([b(inputs) for b in backbones])
    backbone = keras.Model(inputs, embedding, name=f"{model.backbone}_ensemble")
    return build_siamese(image, model, backbone=backbone)


def training_model(siamese: keras.Model, model: ModelConfig,
                   backbone: Optional[keras.Model] = None) -> keras.Model:
    """The model the loss trains: the Siamese model's output (the distance), or for the triplet
    loss the two embeddings ([batch, 2 * dim], left then right) to mine triplets in the batch.
    With the Siamese model's shared `backbone`, the backbone runs ONCE on the 2B images stacked
    (left then right) instead of twice on B: one larger call is faster, and batch normalisation
    takes its statistics over the whole batch. It shares every layer with `siamese`."""
    head = siamese.get_layer(signatures.DISTANCE)
    if backbone is None or not model.shared_weights:
        if model.loss != "triplet":
            return siamese
        embeddings = head.input
    else:
        left, right = (siamese.input[features.transformed_name(k)] for k in features.IMAGE_KEYS)
        embeddings = UnstackPairs(name="unstack_pairs")(
            backbone(StackPairs(name="stack_pairs")([left, right])))
    if model.loss == "triplet":
        return keras.Model(siamese.input, ConcatEmbeddings(name="embeddings")(embeddings),
                           name=f"{siamese.name}_triplet")
    distance = keras.layers.Activation("linear", dtype="float32", name="training_distance")(
        head(embeddings))
    return keras.Model(siamese.input, distance, name=f"{siamese.name}_stacked")


def loss_for(model: ModelConfig) -> keras.losses.Loss:
    """The configured loss (`ModelConfig.loss`); label 1 = same identity for all of them."""
    if model.loss == "contrastive":
        return losses.ContrastiveLoss(model.margin)
    if model.loss == "triplet":
        return losses.SemiHardTripletLoss(model.margin)
    return losses.DistanceBinaryCrossEntropy()


def metrics_for(model: ModelConfig) -> list[keras.metrics.Metric]:
    """The training curves' `pair_accuracy` (the calibrated threshold is only chosen after
    training): for the contrastive loss and the probability heads, the accuracy at the cut the
    loss defines (half the margin for the euclidean head, 0.5 for the probability heads); for
    the triplet loss, which defines no such cut, each batch's accuracy at its best cut
    (`losses.BatchVerificationAccuracy`)."""
    if model.loss == "triplet":
        return [losses.BatchVerificationAccuracy()]
    return [losses.PairAccuracy(heads.distance_scale(model.head, model.margin) / 2)]
