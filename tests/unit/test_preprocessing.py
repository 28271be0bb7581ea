"""Transform's image decoding: every accepted encoding, configured size and channels, [0, 1]."""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from siamese_tfx.components.contract.config import ImageConfig
from siamese_tfx.components.transform.preprocessing import decode_images


def _encode(fmt, mode="L", size=(20, 14)):
    rng = np.random.default_rng(0)
    shape = (size[1], size[0]) + ((3,) if mode == "RGB" else ())
    img = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode)
    out = io.BytesIO()
    img.save(out, format=fmt)
    return out.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "GIF"])
@pytest.mark.parametrize("channels", [1, 3])
def test_every_format_decodes_to_the_configured_shape(fmt, channels):
    config = ImageConfig(height=16, width=12, channels=channels)
    out = decode_images(tf.constant([[_encode(fmt)], [_encode(fmt, mode="RGB")]]), config)
    assert out.shape == (2, 16, 12, channels) and out.dtype == tf.float32
    assert float(tf.reduce_min(out)) >= 0.0 and float(tf.reduce_max(out)) <= 1.0


def test_grey_png_keeps_its_values():
    pixels = np.full((8, 8), 51, dtype=np.uint8)  # 51 / 255 = 0.2
    buf = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buf, format="PNG")
    out = decode_images(tf.constant([buf.getvalue()]), ImageConfig(8, 8, 1))
    np.testing.assert_allclose(out.numpy(), 0.2, atol=1e-3)


def test_undecodable_bytes_fail_loudly():
    with pytest.raises(tf.errors.InvalidArgumentError):
        decode_images(tf.constant([b"not an image"]), ImageConfig(8, 8, 1))
