"""Transform's preprocessing: encoded image bytes to float images in [0, 1].

The exported model applies this same graph (through the Transform output), so clients send
encoded PNG/JPEG/BMP/GIF bytes and never re-implement it.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from siamese_tfx.components.contract import features
from siamese_tfx.components.contract.config import ImageConfig, from_dict


def decode_images(encoded: tf.Tensor, image: ImageConfig) -> tf.Tensor:
    """[batch] or [batch, 1] encoded images -> [batch, height, width, channels] float32 in [0, 1]."""
    encoded = tf.reshape(encoded, [-1])

    def decode_one(data: tf.Tensor) -> tf.Tensor:
        # TF decodes BMP and GIF only to 3 (or 4) channels, so decode to RGB for every format
        # and convert to greyscale after.
        pixels = tf.io.decode_image(data, channels=3, expand_animations=False)
        pixels = tf.image.convert_image_dtype(pixels, tf.float32)
        if image.channels == 1:
            pixels = tf.image.rgb_to_grayscale(pixels)
        pixels = tf.image.resize(pixels, [image.height, image.width], antialias=True)
        return tf.clip_by_value(pixels, 0.0, 1.0)

    return tf.map_fn(
        decode_one,
        encoded,
        fn_output_signature=tf.TensorSpec([image.height, image.width, image.channels], tf.float32),
    )


# TFX Transform calls this, with the `custom_config` the pipeline gives the component.
def preprocessing_fn(inputs: dict[str, Any], custom_config: dict[str, Any]) -> dict[str, Any]:
    image = from_dict(ImageConfig, custom_config["image"])
    outputs = {
        features.transformed_name(key): decode_images(inputs[key], image)
        for key in features.IMAGE_KEYS
    }
    outputs[features.LABEL] = inputs[features.LABEL]
    return outputs
