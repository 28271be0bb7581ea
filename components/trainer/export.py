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

Every signature checks its request in the graph before decoding anything, against the limits the
model stores beside its threshold (ServingLimitsConfig; `signatures.LIMIT_ATTRS`): at most
`max_batch_size` images or pairs, `compare`'s two inputs of one size, each image at most
`max_image_bytes`, a PNG, JPEG, GIF or BMP whose header declares at most `max_image_pixels`
(image_headers.py). A request that breaks one fails with InvalidArgumentError naming the input,
the image and the limit, which TF Serving answers as INVALID_ARGUMENT. An empty batch gets empty
outputs.
"""

from __future__ import annotations

from typing import Callable, Optional

import tensorflow as tf
import tensorflow_transform as tft

from siamese_tfx.components.contract import features, signatures
from siamese_tfx.components.contract.config import ImageConfig, ServingLimitsConfig
from siamese_tfx.components.trainer import image_headers
from siamese_tfx.serving.warmup import write_warmup_requests

keras = tf.keras

TEMPERATURE_FRACTION = 0.1  # of the distance scale: how steeply similarity falls at the threshold
_BELOW_HALF = 0.49999997  # the largest float32 below 0.5


def _require(ok: tf.Tensor, message: Callable[[], tf.Tensor]) -> tf.Tensor:
    """A tensor that fails with InvalidArgumentError(message()) unless `ok`; the message is
    only built when it fails (`message` is called once, right away, to trace that branch)."""
    def fail() -> tf.Tensor:
        with tf.control_dependencies([tf.debugging.Assert(ok, [message()])]):
            return tf.identity(ok)

    return tf.cond(ok, lambda: ok, fail)


def _after(checks: list[tf.Tensor], tensor: tf.Tensor) -> tf.Tensor:
    """`tensor`, available only once `checks` passed."""
    with tf.control_dependencies(checks):
        return tf.identity(tensor)


def _text(value: tf.Tensor) -> tf.Tensor:
    return tf.strings.as_string(value)


def _checked_batch(model: keras.Model, signature: str, inputs: dict[str, tf.Tensor],
                   what: str = "images") -> list[tf.Tensor]:
    """Checks that each input holds at most the model's max_batch_size values and, for
    compare's two, that they hold as many."""
    limit = getattr(model, signatures.MAX_BATCH_SIZE_ATTR)
    sizes = [(name, tf.size(values, out_type=tf.int64)) for name, values in inputs.items()]
    checks = []
    for name, size in sizes:
        checks.append(_require(size <= limit, lambda: tf.strings.join([
            f"{signature}: {name} holds ", _text(size), f" {what}, above the model limit "
            f"{signatures.MAX_BATCH_SIZE_ATTR}=", _text(limit), "; send at most ", _text(limit),
            " per request"])))
    for (first, first_size), (other, other_size) in zip(sizes, sizes[1:]):
        checks.append(_require(tf.equal(first_size, other_size), lambda: tf.strings.join([
            f"{signature}: {first} holds ", _text(first_size), f" {what} but {other} holds ",
            _text(other_size), f"; pair i is ({first}[i], {other}[i]), so both must hold as "
            "many"])))
    return checks


def _checked_images(model: keras.Model, images: tf.Tensor, prefix: str,
                    suffix: str = "") -> tf.Tensor:
    """`images` ([N] encoded), once each is at most max_image_bytes and a PNG, JPEG, GIF or BMP
    whose header declares at most max_image_pixels; else InvalidArgumentError naming the first
    image that is not, as `<prefix>[i]<suffix>`."""
    max_bytes = getattr(model, signatures.MAX_IMAGE_BYTES_ATTR)
    max_pixels = getattr(model, signatures.MAX_IMAGE_PIXELS_ATTR)
    lengths = tf.cast(tf.strings.length(images), tf.int64)
    sizes = image_headers.image_sizes(images, max_bytes)
    problem = tf.where(lengths > max_bytes, 1, tf.where(
        sizes.format == image_headers.UNKNOWN, 2, tf.where(
            sizes.pixels < 0, 3, tf.where(sizes.pixels > max_pixels, 4, 0))))

    def message() -> tf.Tensor:
        i = tf.argmax(tf.cast(problem > 0, tf.int32), output_type=tf.int64)
        image = tf.strings.join([prefix, "[", _text(i), "]", suffix, ": "])
        fmt = tf.gather(tf.constant(image_headers.FORMAT_NAMES), sizes.format[i])
        declared = tf.strings.join([fmt, " of ", _text(sizes.width[i]), "x",
                                    _text(sizes.height[i]), " pixels"])
        texts = tf.stack([
            tf.strings.join([_text(lengths[i]), " bytes, above the model limit ",
                             signatures.MAX_IMAGE_BYTES_ATTR, "=", _text(max_bytes)]),
            tf.constant("not a PNG, JPEG, GIF or BMP image (the formats the model decodes)"),
            tf.strings.join(["a ", fmt, " whose image size cannot be read from its header, "
                             "so the model does not decode it"]),
            tf.strings.join([declared, " (", _text(sizes.pixels[i]), " to decode), above the "
                             "model limit ", signatures.MAX_IMAGE_PIXELS_ATTR, "=",
                             _text(max_pixels)]),
        ])
        return tf.strings.join([image, texts[problem[i] - 1]])

    return _after([_require(tf.reduce_all(problem == 0), message)], images)


def _pair_outputs(model: keras.Model, left: tf.Tensor, right: tf.Tensor) -> dict[str, tf.Tensor]:
    """Distance, similarity and match of the pairs of checked images [N] (empty for N = 0)."""
    def outputs() -> dict[str, tf.Tensor]:
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
        similarity = tf.where(match, tf.maximum(similarity, 0.5),
                              tf.minimum(similarity, _BELOW_HALF))
        return {
            signatures.DISTANCE: distance,
            signatures.SIMILARITY: similarity,
            signatures.MATCH: match,
        }

    def empty() -> dict[str, tf.Tensor]:
        # Convolutions refuse a batch of 0 on CPU, so an empty request never reaches them.
        return {signatures.DISTANCE: tf.zeros([0]), signatures.SIMILARITY: tf.zeros([0]),
                signatures.MATCH: tf.zeros([0], tf.bool)}

    return tf.cond(tf.size(left) > 0, outputs, empty)


def make_serving_signatures(
    model: keras.Model, backbone: keras.Model, tf_transform_output: tft.TFTransformOutput
) -> dict[str, tf.types.experimental.ConcreteFunction]:
    """Builds the signatures; `model` must carry `tft_layer`, the threshold variable
    (`signatures.THRESHOLD_ATTR`), the limit variables (`signatures.LIMIT_ATTRS`) and
    `temperature`."""
    image_spec = {
        key: tf.io.FixedLenFeature([1], tf.string) for key in features.IMAGE_KEYS
    }

    @tf.function(
        input_signature=[tf.TensorSpec([None], tf.string, name=signatures.EXAMPLES_INPUT)])
    def serve_examples(examples: tf.Tensor) -> dict[str, tf.Tensor]:
        checks = _checked_batch(model, signatures.SERVING_DEFAULT,
                                {signatures.EXAMPLES_INPUT: examples}, "examples")
        parsed = tf.io.parse_example(_after(checks, examples), image_spec)
        left, right = (
            _checked_images(model, tf.reshape(parsed[key], [-1]), signatures.EXAMPLES_INPUT,
                            f".{key}")
            for key in features.IMAGE_KEYS)
        return _pair_outputs(model, left, right)

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.string, name=features.LEFT_IMAGE),
            tf.TensorSpec([None], tf.string, name=features.RIGHT_IMAGE),
        ]
    )
    def compare(left_image: tf.Tensor, right_image: tf.Tensor) -> dict[str, tf.Tensor]:
        checks = _checked_batch(model, signatures.COMPARE, {
            features.LEFT_IMAGE: left_image, features.RIGHT_IMAGE: right_image})
        return _pair_outputs(
            model, _checked_images(model, _after(checks, left_image), features.LEFT_IMAGE),
            _checked_images(model, _after(checks, right_image), features.RIGHT_IMAGE))

    embedding_size = backbone.output_shape[-1]

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=signatures.EMBED_INPUT)])
    def embed(image: tf.Tensor) -> dict[str, tf.Tensor]:
        checks = _checked_batch(model, signatures.EMBED, {signatures.EMBED_INPUT: image})
        image = _checked_images(model, _after(checks, tf.reshape(image, [-1])),
                                signatures.EMBED_INPUT)

        def embedding() -> tf.Tensor:
            encoded = tf.reshape(image, [-1, 1])
            # The Transform graph has one input per raw feature; the image goes in as both
            # sides and only the left output is used.
            transformed = model.tft_layer(
                {features.LEFT_IMAGE: encoded, features.RIGHT_IMAGE: encoded}
            )
            return backbone(transformed[features.transformed_name(features.LEFT_IMAGE)])

        def empty() -> tf.Tensor:
            return tf.zeros([0, embedding_size])  # as in _pair_outputs

        return {signatures.EMBEDDING: tf.cond(tf.size(image) > 0, embedding, empty)}

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
    limits: ServingLimitsConfig = ServingLimitsConfig(),
) -> None:
    """Writes the SavedModel with its signatures, and TF Serving's warmup requests, to
    `export_dir`. `distance_scale` (heads.distance_scale) sets the similarity's temperature;
    None: the margin. `limits` are stored in the model and enforced by its signatures."""
    model.tft_layer = tf_transform_output.transform_features_layer()
    setattr(model, signatures.THRESHOLD_ATTR, tf.Variable(
        threshold, trainable=False, dtype=tf.float32, name=signatures.THRESHOLD_ATTR))
    for name, value in ((signatures.MAX_IMAGE_PIXELS_ATTR, limits.serving_max_image_pixels),
                        (signatures.MAX_IMAGE_BYTES_ATTR, limits.serving_max_image_bytes),
                        (signatures.MAX_BATCH_SIZE_ATTR, limits.serving_max_batch_size)):
        setattr(model, name, tf.Variable(value, trainable=False, dtype=tf.int64, name=name))
    scale = margin if distance_scale is None else distance_scale
    model.temperature = tf.constant(TEMPERATURE_FRACTION * scale, dtype=tf.float32)
    model.save(export_dir, save_format="tf",
               signatures=make_serving_signatures(model, backbone, tf_transform_output))
    write_warmup_requests(export_dir, model_name, warmup_images(image))
