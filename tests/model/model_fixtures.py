"""Helpers of the model tests: a real Transform graph on tiny images (tf.Transform on Beam, in
process), the transformed pairs, and PNG bytes."""

from __future__ import annotations

import io
import os
import tempfile

import numpy as np
from PIL import Image

from siamese_tfx.components.contract import features
from siamese_tfx.components.contract.config import ImageConfig


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def random_pngs(count: int, size: int = 20, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [png(rng.integers(0, 256, (size, size), dtype=np.uint8)) for _ in range(count)]


def raw_examples(count: int = 8, size: int = 20, seed: int = 0) -> list[dict]:
    images = random_pngs(2 * count, size, seed)
    return [{features.LEFT_IMAGE: [images[2 * i]], features.RIGHT_IMAGE: [images[2 * i + 1]],
             features.LABEL: [i % 2], features.LEFT_CLASS: [b"a"],
             features.RIGHT_CLASS: [b"a" if i % 2 else b"b"]} for i in range(count)]


def write_transform_graph(out_dir: str, image: ImageConfig) -> str:
    """Runs the pipeline's preprocessing_fn through tf.Transform on a few raw pairs and writes
    its transform graph to `out_dir` (what the Trainer receives from Transform)."""
    import tensorflow as tf
    import tensorflow_transform as tft
    import tensorflow_transform.beam as tft_beam
    from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

    from siamese_tfx.components.transform import preprocessing

    spec = {
        features.LEFT_IMAGE: tf.io.FixedLenFeature([1], tf.string),
        features.RIGHT_IMAGE: tf.io.FixedLenFeature([1], tf.string),
        features.LABEL: tf.io.FixedLenFeature([1], tf.int64),
        features.LEFT_CLASS: tf.io.FixedLenFeature([1], tf.string),
        features.RIGHT_CLASS: tf.io.FixedLenFeature([1], tf.string),
    }
    metadata = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(spec))
    config = {"image": {"height": image.height, "width": image.width,
                        "channels": image.channels}}

    def preprocessing_fn(inputs):
        return preprocessing.preprocessing_fn(inputs, config)

    with tft_beam.Context(temp_dir=tempfile.mkdtemp(prefix="tft-")):
        (_, transform_fn) = (
            (raw_examples(), metadata) | tft_beam.AnalyzeAndTransformDataset(preprocessing_fn))
        _ = transform_fn | tft_beam.WriteTransformFn(out_dir)
    assert os.path.exists(os.path.join(out_dir, tft.TFTransformOutput.TRANSFORM_FN_DIR))
    return out_dir
