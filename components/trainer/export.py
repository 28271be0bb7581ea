"""The exported SavedModel: Transform's graph + the Siamese model + the calibrated threshold,
behind three explicit serving signatures.

- `serving_default`: serialized tf.Example (left_image, right_image) -> distance, similarity,
  match. Evaluator (TFMA) reads this one.
- `compare`: left_image, right_image (encoded image bytes) -> distance, similarity, match.
- `embed`: image (encoded bytes) -> embedding.

For every head, distance >= 0 (larger = less similar) and match = distance <= threshold (the
threshold calibrated on the eval split, a variable of the SavedModel). similarity =
sigmoid((threshold - distance) / temperature), kept at >= 0.5 exactly when match (float32
rounding near the threshold cannot flip it), so a 0.5 cut on it (TFMA's BinaryAccuracy) is the
calibrated decision. The temperature is a tenth of the head's distance scale (the margin for the
euclidean head, 1 for the probability heads).
"""

from __future__ import annotations

from typing import Optional

import tensorflow as tf
import tensorflow_transform as tft

from siamese_tfx.components.contract import features, signatures
from siamese_tfx.components.contract.config import ImageConfig
from siamese_tfx.serving.warmup import write_warmup_requests

keras = tf.keras

TEMPERATURE_FRACTION = 0.1  # of the distance scale: how steeply similarity falls at the threshold
_BELOW_HALF = 0.49999997  # the largest float32 below 0.5


def _pair_outputs(model: keras.Model, left: tf.Tensor, right: tf.Tensor) -> dict[str, tf.Tensor]:
    transformed = model.tft_layer(
        {features.LEFT_IMAGE: tf.reshape(left, [-1, 1]),
         features.RIGHT_IMAGE: tf.reshape(right, [-1, 1])}
    )
    distance = model(
        {features.transformed_name(k): transformed[features.transformed_name(k)]
         for k in features.IMAGE_KEYS}
    )
    distance = tf.reshape(distance, [-1])
    threshold = getattr(model, signatures.THRESHOLD_ATTR)
    match = distance <= threshold
    similarity = tf.sigmoid((threshold - distance) / model.temperature)
    similarity = tf.where(match, tf.maximum(similarity, 0.5), tf.minimum(similarity, _BELOW_HALF))
    return {
        signatures.DISTANCE: distance,
        signatures.SIMILARITY: similarity,
        signatures.MATCH: match,
    }


def make_serving_signatures(
    model: keras.Model, backbone: keras.Model, tf_transform_output: tft.TFTransformOutput
) -> dict[str, tf.types.experimental.ConcreteFunction]:
    """Builds the signatures; `model` must carry `tft_layer`, the threshold variable
    (`signatures.THRESHOLD_ATTR`) and `temperature`."""
    image_spec = {
        key: tf.io.FixedLenFeature([1], tf.string) for key in features.IMAGE_KEYS
    }

    @tf.function(
        input_signature=[tf.TensorSpec([None], tf.string, name=signatures.EXAMPLES_INPUT)])
    def serve_examples(examples: tf.Tensor) -> dict[str, tf.Tensor]:
        parsed = tf.io.parse_example(examples, image_spec)
        return _pair_outputs(model, parsed[features.LEFT_IMAGE], parsed[features.RIGHT_IMAGE])

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.string, name=features.LEFT_IMAGE),
            tf.TensorSpec([None], tf.string, name=features.RIGHT_IMAGE),
        ]
    )
    def compare(left_image: tf.Tensor, right_image: tf.Tensor) -> dict[str, tf.Tensor]:
        return _pair_outputs(model, left_image, right_image)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=signatures.EMBED_INPUT)])
    def embed(image: tf.Tensor) -> dict[str, tf.Tensor]:
        encoded = tf.reshape(image, [-1, 1])
        # The Transform graph has one input per raw feature; the image goes in as both sides
        # and only the left output is used.
        transformed = model.tft_layer(
            {features.LEFT_IMAGE: encoded, features.RIGHT_IMAGE: encoded}
        )
        embedding = backbone(transformed[features.transformed_name(features.LEFT_IMAGE)])
        return {signatures.EMBEDDING: embedding}

    return {
        signatures.SERVING_DEFAULT: serve_examples.get_concrete_function(),
        signatures.COMPARE: compare.get_concrete_function(),
        signatures.EMBED: embed.get_concrete_function(),
    }


def warmup_images(image: ImageConfig, count: int = 2) -> list[bytes]:
    """Synthetic PNGs of the model's input size, for TF Serving's warmup replay."""
    ramp = tf.linspace(0.0, 1.0, image.height * image.width * image.channels)
    pixels = tf.reshape(ramp, [image.height, image.width, image.channels])
    return [
        tf.io.encode_png(tf.image.convert_image_dtype(p, tf.uint8)).numpy()
        for p in (pixels, 1.0 - pixels, tf.reverse(pixels, [0]))[:count]
    ]


def export_model(
    model: keras.Model,
    backbone: keras.Model,
    tf_transform_output: tft.TFTransformOutput,
    threshold: float,
    margin: float,
    export_dir: str,
    image: ImageConfig,
    model_name: str,
    distance_scale: Optional[float] = None,
) -> None:
    """Writes the SavedModel with its signatures, and TF Serving's warmup requests, to
    `export_dir`. `distance_scale` (heads.distance_scale) sets the similarity's temperature;
    None: the margin."""
    model.tft_layer = tf_transform_output.transform_features_layer()
    setattr(model, signatures.THRESHOLD_ATTR, tf.Variable(
        threshold, trainable=False, dtype=tf.float32, name=signatures.THRESHOLD_ATTR))
    scale = margin if distance_scale is None else distance_scale
    model.temperature = tf.constant(TEMPERATURE_FRACTION * scale, dtype=tf.float32)
    model.save(export_dir, save_format="tf",
               signatures=make_serving_signatures(model, backbone, tf_transform_output))
    write_warmup_requests(export_dir, model_name, warmup_images(image))
