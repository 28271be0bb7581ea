"""Image sizes read from headers in the graph (components/trainer/image_headers.py): the same as
Pillow reads, for every format and layout the model decodes, and -1 where the header cannot be
followed."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from siamese_tfx.components.trainer import image_headers as headers

RNG = np.random.default_rng(0)


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _image(width: int, height: int, mode: str = "L") -> Image.Image:
    channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    pixels = RNG.integers(0, 256, (height, width, channels), dtype=np.uint8)
    return Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode)


@tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
def _graph_sizes(images: tf.Tensor) -> headers.ImageSizes:
    return headers.image_sizes(images)


def _sizes(images: list[bytes]) -> list[tuple[str, int, int, int]]:
    """(format, width, height, pixels) of each image, computed in a graph as the model does."""
    sizes = _graph_sizes(tf.constant(images, tf.string))
    return [(headers.FORMAT_NAMES[f], int(w), int(h), int(p)) for f, w, h, p in zip(
        sizes.format.numpy(), sizes.width.numpy(), sizes.height.numpy(), sizes.pixels.numpy())]


def _bomb_png_header(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + b"\0" * 4


def _jpeg_segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


CASES = [
    ("PNG", _encode(_image(37, 21), "PNG")),
    ("PNG", _encode(_image(5, 300, "RGBA"), "PNG")),
    ("PNG", _encode(Image.fromarray(RNG.integers(0, 65535, (9, 14), dtype=np.uint16)), "PNG")),
    ("JPEG", _encode(_image(40, 31, "RGB"), "JPEG")),
    ("JPEG", _encode(_image(33, 64), "JPEG", progressive=True)),
    ("JPEG", _encode(_image(17, 19, "RGB"), "JPEG", quality=95, optimize=True,
                     exif=b"Exif\0\0" + b"\xff\xc0\x00\x11\x08\x7f\xff\x7f\xff" * 30)),
    ("GIF", _encode(_image(23, 11), "GIF")),
    ("BMP", _encode(_image(13, 7, "RGB"), "BMP")),
    ("BMP", _encode(_image(16, 16), "BMP")),
]


@pytest.mark.parametrize("fmt,data", CASES, ids=[f"{i}-{c[0]}" for i, c in enumerate(CASES)])
def test_sizes_are_what_pillow_reads(fmt, data):
    with Image.open(io.BytesIO(data)) as image:
        width, height = image.size

    assert _sizes([data]) == [(fmt, width, height, width * height)]


def test_a_batch_of_mixed_formats_keeps_each_its_own_size():
    images = [data for _, data in CASES]

    sizes = _sizes(images)

    assert [s[0] for s in sizes] == [fmt for fmt, _ in CASES]
    assert sizes == [_sizes([data])[0] for data in images]


def test_a_decompression_bomb_is_measured_from_its_ihdr():
    assert _sizes([_bomb_png_header(20000, 20000)]) == [("PNG", 20000, 20000, 400_000_000)]


def test_jpeg_fill_bytes_and_restart_markers_before_the_frame_are_skipped():
    jpeg = _encode(_image(12, 10, "RGB"), "JPEG")
    padded = jpeg[:2] + b"\xff\xff\xff" + _jpeg_segment(0xFE, b"comment") + jpeg[2:]

    assert _sizes([padded]) == [("JPEG", 12, 10, 120)]


def test_a_jpeg_without_a_frame_header_before_its_data_has_no_size():
    jpeg = _encode(_image(12, 10, "RGB"), "JPEG")
    sof = jpeg.index(b"\xff\xc0")
    no_frame = jpeg[:sof] + b"\xff\xda\x00\x02" + b"\0" * 8  # SOS before any SOF
    truncated = jpeg[:sof + 3]
    junk = jpeg[:2] + b"\x00\x01" + jpeg[2:]  # not a marker where one must be
    endless = jpeg[:2] + _jpeg_segment(0xFE, b"x") * (headers.MAX_JPEG_SEGMENTS + 1) + jpeg[2:]

    assert [s[3] for s in _sizes([no_frame, truncated, junk, endless])] == [-1, -1, -1, -1]


def _gif(screen: tuple[int, int], frames: list[tuple[int, int]]) -> bytes:
    """A GIF89a with a 2-colour global table and one minimal image per (width, height)."""
    data = b"GIF89a" + struct.pack("<HHBBB", *screen, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff"
    data += b"\x21\xf9\x04\x00\x00\x00\x00\x00"  # a graphic control extension
    for width, height in frames:
        data += b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0)
        data += b"\x02" + b"\x02\x4c\x01" + b"\x01\x00" + b"\x00"  # LZW size, 2 sub-blocks, end
    return data + b"\x3b"


def test_a_gif_of_full_sub_blocks_is_walked_to_its_frames():
    large = _encode(_image(600, 500), "GIF", save_all=True, append_images=[_image(600, 500)])

    assert _sizes([large]) == [("GIF", 600, 500, 600_000)] and len(large) > 500_000


def test_gif_pixels_count_every_frame_giflib_decodes():
    animated = _encode(_image(20, 10), "GIF", save_all=True,
                       append_images=[_image(20, 10), _image(20, 10)])
    with Image.open(io.BytesIO(animated)) as image:
        frames = image.n_frames

    sizes = _sizes([animated, _gif((4, 4), [(4, 4)]), _gif((2, 2), [(3000, 4000)]),
                    _gif((100, 100), [(50, 50)] * 3)])

    assert sizes[0] == ("GIF", 20, 10, 200 * max(1, frames)) and frames == 3
    assert sizes[1] == ("GIF", 4, 4, 16)
    assert sizes[2] == ("GIF", 2, 2, 12_000_000)  # a frame far larger than its screen
    assert sizes[3] == ("GIF", 100, 100, 10_000)  # the screen is larger than 3 x 2500


def test_a_gif_whose_blocks_cannot_be_walked_in_time_has_no_size():
    tiny_sub_blocks = _gif((4, 4), [(4, 4)])[:-1].replace(
        b"\x02\x4c\x01\x01\x00\x00", b"\x01\x00" * (16 * headers.gif_steps(1 << 24) + 1) + b"\x00")

    assert _sizes([tiny_sub_blocks])[0][3] == -1


def test_top_down_bmp_counts_its_absolute_height():
    bmp = bytearray(_encode(_image(6, 5, "RGB"), "BMP"))
    bmp[22:26] = struct.pack("<i", -5)

    assert _sizes([bytes(bmp)]) == [("BMP", 6, 5, 30)]


def test_what_tensorflow_does_not_decode_is_unknown():
    webp = _encode(_image(8, 8, "RGB"), "WEBP")
    sizes = _sizes([b"", b"not an image at all", webp, b"\x89PNG\r\n\x1a\n" + b"\0" * 30])

    assert [s[0] for s in sizes[:3]] == ["unknown"] * 3
    assert sizes[3] == ("PNG", -1, -1, -1)  # a PNG signature without its IHDR chunk


def test_an_empty_batch_has_empty_sizes():
    sizes = _graph_sizes(tf.constant([], tf.string))

    assert [t.shape.as_list() for t in sizes] == [[0]] * 4
