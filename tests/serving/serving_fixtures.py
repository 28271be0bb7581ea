"""Builds tiny real SavedModels with the served contract, and encoded test images.

The models have exactly the pushed model's signatures (`serving_default`, `compare`, `embed`), with
decoding and resizing inside the model, and a fixed random projection as the embedding.
`build_exported_model` writes the Trainer's real export instead (its input checks included).
"""

from __future__ import annotations

import io
import os
import sys

import numpy as np
import pytest
from PIL import Image

ADDRESS_ENV = "SIAMESE_TFX_SERVING_ADDRESS"

IMAGE_SIZE = 16
EMBEDDING_DIM = 8


def encoded_images(count: int = 6, seed: int = 0) -> list[bytes]:
    """`count` random images encoded in turn as PNG, JPEG, BMP and GIF, of differing sizes."""
    rng = np.random.default_rng(seed)
    formats = ["PNG", "JPEG", "BMP", "GIF"]
    images = []
    for i in range(count):
        height, width = 20 + i, 24 + 2 * i
        pixels = rng.integers(0, 256, size=(height, width), dtype=np.uint8)
        buffer = io.BytesIO()
        mode = "RGB" if formats[i % 4] == "JPEG" else "L"
        Image.fromarray(pixels).convert(mode).save(buffer, format=formats[i % 4])
        images.append(buffer.getvalue())
    return images


SIGNATURES = ("serving_default", "compare", "embed")


def build_model(export_dir: str, seed: int, threshold: float = 1.0,
                signatures: tuple[str, ...] = SIGNATURES, distance_noise: float = 0.0,
                nan_embedding: bool = False) -> str:
    """Saves a Siamese-contract SavedModel to `export_dir` (TF Serving version folder).

    Broken variants, for infra validation: only some `signatures`; random noise of up to
    `distance_noise` on every distance (answers differ from run to run); NaN embeddings.
    """
    import tensorflow as tf

    class FixtureSiamese(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            rng = np.random.default_rng(seed)
            weights = rng.normal(size=(IMAGE_SIZE * IMAGE_SIZE, EMBEDDING_DIM)) / IMAGE_SIZE
            self.projection = tf.Variable(weights.astype(np.float32), trainable=False)
            self.threshold = tf.Variable(threshold, dtype=tf.float32, trainable=False)

        def _embed(self, images: tf.Tensor) -> tf.Tensor:
            def one(encoded: tf.Tensor) -> tf.Tensor:
                # channels=1 is refused for BMP and GIF: decode to RGB, then make it grey.
                image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
                image = tf.image.rgb_to_grayscale(image)
                image = tf.image.resize(tf.cast(image, tf.float32) / 255.0, [IMAGE_SIZE] * 2)
                return tf.reshape(image, [IMAGE_SIZE * IMAGE_SIZE])

            pixels = tf.map_fn(one, images, fn_output_signature=tf.float32)
            embedding = tf.matmul(pixels, self.projection)
            return embedding * float("nan") if nan_embedding else embedding

        def _compare(self, left: tf.Tensor, right: tf.Tensor) -> dict[str, tf.Tensor]:
            distance = tf.norm(self._embed(left) - self._embed(right), axis=1)
            if distance_noise:
                distance += tf.random.uniform(tf.shape(distance), 0.0, distance_noise)
            return {
                "distance": distance,
                "similarity": tf.sigmoid(4.0 * (self.threshold - distance)),
                "match": distance <= self.threshold,
            }

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def embed(self, image: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"embedding": self._embed(image)}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)] * 2)
        def compare(self, left_image: tf.Tensor, right_image: tf.Tensor) -> dict[str, tf.Tensor]:
            return self._compare(left_image, right_image)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def serving_default(self, examples: tf.Tensor) -> dict[str, tf.Tensor]:
            features = tf.io.parse_example(
                examples,
                {
                    "left_image": tf.io.FixedLenFeature([], tf.string),
                    "right_image": tf.io.FixedLenFeature([], tf.string),
                },
            )
            return self._compare(features["left_image"], features["right_image"])

    module = FixtureSiamese()
    tf.saved_model.save(
        module,
        export_dir,
        signatures={
            name: function
            for name, function in (
                ("serving_default", module.serving_default),
                ("compare", module.compare),
                ("embed", module.embed),
            )
            if name in signatures
        },
    )
    return export_dir


def build_exported_model(export_dir: str, model_name: str, work_dir: str,
                         threshold: float = 0.5) -> str:
    """The Trainer's own export (export.export_model) of an untrained small_conv Siamese model
    (the same weights every time) with match `threshold`: the real Transform graph
    (preprocessing_fn through tf.Transform, in `work_dir`, reused when it is there already),
    the exported signatures with their input checks and the default ServingLimitsConfig, and its
    warmup requests. Tens of seconds on 2 cores (the Transform graph most of it)."""
    import tensorflow as tf
    import tensorflow_transform as tft

    from siamese_tfx.components.contract.config import ImageConfig, ModelConfig
    from siamese_tfx.components.trainer import export, heads, train

    # The Transform graph helper of the model tests (tests/model/model_fixtures.py).
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "model"))
    import model_fixtures

    image = ImageConfig(height=IMAGE_SIZE, width=IMAGE_SIZE, channels=1)
    graph = os.path.join(work_dir, "transform")
    if not os.path.isdir(os.path.join(graph, tft.TFTransformOutput.TRANSFORM_FN_DIR)):
        model_fixtures.write_transform_graph(graph, image)
    model_cfg = ModelConfig(backbone="small_conv", embedding_dim=EMBEDDING_DIM)
    tf.keras.utils.set_random_seed(0)
    siamese, backbone, _ = train.compile_for_training(
        tf.distribute.get_strategy(), image, model_cfg, 1e-3)
    export.export_model(siamese, backbone, tft.TFTransformOutput(graph), threshold,
                        model_cfg.margin,
                        export_dir, image, model_name,
                        heads.distance_scale(model_cfg.head, model_cfg.margin))
    return export_dir


def example_bytes(left: bytes, right: bytes) -> bytes:
    """A serialized tf.Example with the `left_image` and `right_image` bytes features."""
    from tensorflow.core.example import example_pb2, feature_pb2

    def feature(value: bytes) -> feature_pb2.Feature:
        return feature_pb2.Feature(bytes_list=feature_pb2.BytesList(value=[value]))

    example = example_pb2.Example(
        features=feature_pb2.Features(
            feature={"left_image": feature(left), "right_image": feature(right)}
        )
    )
    return example.SerializeToString()


def version_dir(model_base: str, model_name: str, version: int) -> str:
    """`<model_base>/<model_name>/<version>`."""
    return os.path.join(model_base, model_name, str(version))


def remote_address() -> str | None:
    """host:port of a remote server under test (SIAMESE_TFX_SERVING_ADDRESS), or None."""
    return os.environ.get(ADDRESS_ENV) or None


def needs_local_server() -> None:
    """Skips the calling test when the suite runs against a remote server."""
    if remote_address():
        pytest.skip(f"needs the local server and its model folder ({ADDRESS_ENV} is set)")
