"""Embedding networks ("towers"): [batch, H, W, C] in [0, 1] -> [batch, embedding_dim], unit
length. Every backbone is one Keras model that the Siamese model calls on both images.

- small_conv: three conv/pool blocks and global average pooling; any size >= 8.
- koch: the tower of Koch, Zemel & Salakhutdinov (2015) for 105x105 Omniglot characters
  (64@10x10, 128@7x7, 128@4x4, 256@4x4 convolutions with max pooling, then a dense layer), with
  "same" padding so smaller images work too, and a dense embedding of `embedding_dim`.
- conv4: the four-block network of few-shot learning (Vinyals et al. 2016, Snell et al. 2017):
  four blocks of a 3x3 convolution (64 filters), batch norm, ReLU and 2x2 max pooling, then the
  flattened features through a dense embedding; any size >= 8.
- vgg: VGG-style blocks of two 3x3 convolutions (batch norm) and max pooling; any size >= 8.
- mobilenet_v2, resnet50, inception_v3, efficientnet_b0: keras.applications without their top,
  `weights=None` (random) or a local weights file (`ModelConfig.backbone_weights`, never a
  download). Greyscale images are repeated to 3 channels and scaled as the family expects,
  inside the model; images smaller than `MIN_APPLICATION_SIZE` are resized up to it inside the
  backbone.
"""

from __future__ import annotations

import os
from typing import Callable

import tensorflow as tf

from siamese_tfx.components.contract.config import ImageConfig, ModelConfig
from siamese_tfx.components.trainer.layers import (ImageNetPreprocess, L2Normalize,
                                                   PerImageStandardize)

keras = tf.keras

# keras.applications refuse inputs smaller than these (obtain_input_shape's min_size).
MIN_APPLICATION_SIZE = {"mobilenet_v2": 32, "resnet50": 32, "inception_v3": 75,
                        "efficientnet_b0": 32}
_APPLICATIONS = {
    "mobilenet_v2": ("MobileNetV2", "mobilenet_v2"),
    "resnet50": ("ResNet50", "resnet50"),
    "inception_v3": ("InceptionV3", "inception_v3"),
    "efficientnet_b0": ("EfficientNetB0", "efficientnet"),
}


def _input(image: ImageConfig) -> keras.Input:
    return keras.Input((image.height, image.width, image.channels), name="image")


def _embedding(x: tf.Tensor, model: ModelConfig) -> tf.Tensor:
    return L2Normalize(name="unit_embedding")(
        keras.layers.Dense(model.embedding_dim, name="embedding")(x))


def small_conv(image: ImageConfig, model: ModelConfig) -> keras.Model:
    inputs = _input(image)
    x = inputs
    for filters in (32, 64, 128):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(model.embedding_dim)(x)
    return keras.Model(inputs, L2Normalize()(x), name="small_conv")


def _conv_bn_relu(x: tf.Tensor, filters: int) -> tf.Tensor:
    """3x3 convolution (no bias: batch norm follows), batch norm, ReLU."""
    x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
    x = keras.layers.BatchNormalization()(x)
    return keras.layers.ReLU()(x)


def koch(image: ImageConfig, model: ModelConfig) -> keras.Model:
    inputs = _input(image)
    x = inputs
    for filters, kernel, pool in ((64, 10, True), (128, 7, True), (128, 4, True),
                                  (256, 4, False)):
        x = keras.layers.Conv2D(filters, kernel, padding="same", activation="relu")(x)
        if pool:
            x = keras.layers.MaxPooling2D(2, padding="same")(x)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, _embedding(x, model), name="koch")


def conv4(image: ImageConfig, model: ModelConfig) -> keras.Model:
    inputs = _input(image)
    x = inputs
    for _ in range(4):
        x = _conv_bn_relu(x, 64)
        x = keras.layers.MaxPooling2D(2, padding="same")(x)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, _embedding(x, model), name="conv4")


def vgg(image: ImageConfig, model: ModelConfig) -> keras.Model:
    inputs = _input(image)
    x = inputs
    for filters in (32, 64, 128, 256):
        for _ in range(2):
            x = _conv_bn_relu(x, filters)
        x = keras.layers.MaxPooling2D(2, padding="same")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, _embedding(x, model), name="vgg")


def application(image: ImageConfig, model: ModelConfig) -> keras.Model:
    """A keras.applications backbone (see the module doc)."""
    class_name, family = _APPLICATIONS[model.backbone]
    weights = model.backbone_weights or None
    if weights and not os.path.exists(weights):
        raise ValueError(f"backbone_weights {weights!r} does not exist (weights are never "
                         "downloaded: give a local include_top=False weights file)")
    minimum = MIN_APPLICATION_SIZE[model.backbone]
    height, width = max(image.height, minimum), max(image.width, minimum)
    inputs = _input(image)
    x = inputs
    if (height, width) != (image.height, image.width):
        x = keras.layers.Resizing(height, width, name="resize_to_minimum")(x)
    if image.channels == 1:
        x = keras.layers.Concatenate(name="grey_to_rgb")([x, x, x])
    x = ImageNetPreprocess(family, name="imagenet_preprocess")(x)
    base = getattr(keras.applications, class_name)(
        include_top=False, weights=weights, input_shape=(height, width, 3), pooling="avg")
    return keras.Model(inputs, _embedding(base(x), model), name=model.backbone)


BUILDERS: dict[str, Callable[[ImageConfig, ModelConfig], keras.Model]] = {
    "small_conv": small_conv,
    "koch": koch,
    "conv4": conv4,
    "vgg": vgg,
    **{name: application for name in _APPLICATIONS},
}


def build_backbone(image: ImageConfig, model: ModelConfig, name: str = "") -> keras.Model:
    """The embedding network: [batch, H, W, C] in [0, 1] -> [batch, embedding_dim], unit length.
    `name` renames it (the pseudo-Siamese network has two). With
    `ModelConfig.standardize_images`, each image is first standardized (`PerImageStandardize`)."""
    backbone = BUILDERS[model.backbone](image, model)
    if model.standardize_images:
        inputs = _input(image)
        standardized = PerImageStandardize(name="standardize")(inputs)
        return keras.Model(inputs, backbone(standardized), name=name or backbone.name)
    if name:
        return keras.Model(backbone.inputs, backbone.outputs, name=name)
    return backbone
