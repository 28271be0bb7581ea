"""Image sizes read from the encoded bytes' headers with TensorFlow string ops, before anything
is decoded.

The exported model checks these against its limits inside its own graph (so TF Serving enforces
them too): a 389 KB PNG can declare 20000x20000 pixels, and decoding it takes gigabytes. The
sizes are those TensorFlow's decoders (`tf.io.decode_image`) allocate for:

- PNG: width and height of the IHDR chunk, which must come first;
- JPEG: the frame header (SOF0-SOF15 but DHT, JPG and DAC), found by walking the marker
  segments from the start (at most `MAX_JPEG_SEGMENTS`);
- GIF: the logical screen, and the frames' image descriptors, walked block by block (for as
  many steps as `max_image_bytes` of full sub-blocks take): giflib decodes every frame before
  TensorFlow takes the first, so the pixels of a GIF are the larger of its screen and its
  frames' total;
- BMP: the signed 32-bit width and height at offsets 18 and 22, as TensorFlow reads them
  whatever the DIB header's kind.

Anything else is not an image TensorFlow decodes (it detects the format by the same magic
bytes). A header that cannot be followed gives pixels -1, so callers refuse what they cannot
measure.
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

UNKNOWN, PNG, JPEG, GIF, BMP = 0, 1, 2, 3, 4
FORMAT_NAMES = ("unknown", "PNG", "JPEG", "GIF", "BMP")

# Legitimate JPEGs reach their frame header within a few segments (APPn, DQT, DHT, COM, ...).
MAX_JPEG_SEGMENTS = 512
# A GIF's data comes in sub-blocks of at most 255 bytes; each step of the walk reads one block
# header or hops over up to _GIF_HOPS sub-blocks (4 KiB of full ones, 32 bytes of the smallest).
_GIF_HOPS = 16
_GIF_WINDOW = 256 * _GIF_HOPS + 1  # the farthest the hops reach, and the size byte there
_GIF_EXTRA_STEPS = 256  # beyond the data's: extensions, descriptors, terminators

_PNG_SIGNATURE = (0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A)
_IHDR = (0x49, 0x48, 0x44, 0x52)
_JPEG_SIGNATURE = (0xFF, 0xD8, 0xFF)
_GIF_SIGNATURE = (0x47, 0x49, 0x46, 0x38)  # "GIF8", as TensorFlow detects it
_BMP_SIGNATURE = (0x42, 0x4D)  # "BM"


class ImageSizes(NamedTuple):
    """Per image of a batch: its format (UNKNOWN, PNG, ...) as int32, and as int64 its width,
    height and the pixels decoding it allocates (-1 where the header could not be read)."""

    format: tf.Tensor
    width: tf.Tensor
    height: tf.Tensor
    pixels: tf.Tensor


def _int64(value: int) -> tf.Tensor:
    return tf.constant(value, tf.int64)


def _bytes_at(images: tf.Tensor, lengths: tf.Tensor, pos: tf.Tensor, count: int) -> tf.Tensor:
    """[N, count] int64: bytes pos[i] .. pos[i] + count of images[i], zeros past its end."""
    pos = tf.minimum(pos, lengths)
    pieces = tf.strings.substr(images, pos, tf.fill(tf.shape(pos), tf.constant(count, tf.int64)))
    return tf.cast(tf.io.decode_raw(pieces, tf.uint8, fixed_length=count), tf.int64)


def _starts_with(head: tf.Tensor, signature: tuple[int, ...]) -> tf.Tensor:
    return tf.reduce_all(head[:, :len(signature)] == tf.constant(signature, tf.int64), axis=1)


def _be16(b: tf.Tensor, i: int) -> tf.Tensor:
    return b[:, i] * 256 + b[:, i + 1]


def _le16(b: tf.Tensor, i: int) -> tf.Tensor:
    return b[:, i] + b[:, i + 1] * 256


def _be32(b: tf.Tensor, i: int) -> tf.Tensor:
    return _be16(b, i) * 65536 + _be16(b, i + 2)


def _le32_signed(b: tf.Tensor, i: int) -> tf.Tensor:
    unsigned = _le16(b, i) + _le16(b, i + 2) * 65536
    return tf.where(unsigned >= 2**31, unsigned - 2**32, unsigned)


def _color_table_bytes(packed: tf.Tensor) -> tf.Tensor:
    """Size of the GIF colour table a packed-fields byte announces (0 without one)."""
    entries = tf.bitwise.left_shift(tf.ones_like(packed), tf.bitwise.bitwise_and(packed, 7) + 1)
    return tf.where(tf.bitwise.bitwise_and(packed, 0x80) > 0, 3 * entries, _int64(0))


def _jpeg_frame_sizes(images: tf.Tensor, lengths: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(width, height) from the first frame header of each JPEG; -1 when the marker segments
    cannot be followed to one."""
    count = tf.shape(images, out_type=tf.int64)[0]
    unknown = tf.fill([count], _int64(-1))

    def walk(step, pos, done, width, height):
        b = _bytes_at(images, lengths, pos, 9)
        is_marker = b[:, 0] == 0xFF
        marker = b[:, 1]
        fill = is_marker & (marker == 0xFF)
        frame_marker = (is_marker & (marker >= 0xC0) & (marker <= 0xCF) & (marker != 0xC4)
                        & (marker != 0xC8) & (marker != 0xCC))
        frame = frame_marker & (pos + 9 <= lengths)
        standalone = is_marker & ((marker == 0x01) | ((marker >= 0xD0) & (marker <= 0xD8)))
        segment = _be16(b, 2)
        # Not a marker, the image data (SOS) or its end (EOI) before any frame header, a
        # segment shorter than its own length field, or a frame header cut off: there is no
        # size to read.
        stuck = (~is_marker | (marker == 0xD9) | (marker == 0xDA) | (frame_marker & ~frame)
                 | (~fill & ~frame_marker & ~standalone & (segment < 2)))
        advance = tf.where(fill, _int64(1), tf.where(standalone, _int64(2), 2 + segment))
        found = ~done & frame
        width = tf.where(found, _be16(b, 7), width)
        height = tf.where(found, _be16(b, 5), height)
        pos = tf.where(done | frame | stuck, pos, pos + advance)
        return step + 1, pos, done | frame | stuck, width, height

    _, _, _, width, height = tf.while_loop(
        lambda step, pos, done, *_: (step < MAX_JPEG_SEGMENTS) & tf.reduce_any(~done),
        walk,
        (tf.constant(0), tf.fill([count], _int64(2)), tf.zeros([count], tf.bool),
         unknown, unknown),
    )
    return width, height


def gif_steps(max_image_bytes: int | tf.Tensor) -> int | tf.Tensor:
    """How many steps the GIF walk takes at most: enough for `max_image_bytes` of full
    sub-blocks."""
    return max_image_bytes // (256 * _GIF_HOPS) + _GIF_EXTRA_STEPS


def _gif_pixels(images: tf.Tensor, lengths: tf.Tensor, max_steps: tf.Tensor) -> tf.Tensor:
    """The total pixels of each GIF's frames (image descriptors); -1 when its blocks cannot be
    walked to the trailer (or the end of the data) within `max_steps`."""
    count = tf.shape(images, out_type=tf.int64)[0]
    head = _bytes_at(images, lengths, tf.zeros([count], tf.int64), 13)
    start = 13 + _color_table_bytes(head[:, 10])

    def walk(step, pos, in_data, done, total):
        # Each step reads one block header, or hops over up to _GIF_HOPS data sub-blocks (each
        # a size byte, then that many bytes) inside one window of the data.
        window = _bytes_at(images, lengths, pos, _GIF_WINDOW)
        first = window[:, 0]
        extension = ~in_data & (first == 0x21)
        descriptor = ~in_data & (first == 0x2C)
        # A block that is neither (the trailer 0x3B, the end of the data, or junk giflib
        # refuses) ends the walk.
        ended = ~in_data & ~extension & ~descriptor
        total = tf.where(~done & descriptor, total + _le16(window, 5) * _le16(window, 7), total)
        after_descriptor = pos + 10 + _color_table_bytes(window[:, 9]) + 1  # + LZW size byte
        offset = tf.zeros_like(pos)
        hopping = in_data
        for _ in range(_GIF_HOPS):
            size = tf.gather(window, offset, batch_dims=1)
            hopping = hopping & (size > 0)
            offset = tf.where(hopping, offset + size + 1, offset)
        terminator = in_data & (first == 0)  # a zero size ends the sub-blocks
        next_pos = tf.where(extension, pos + 2, tf.where(
            descriptor, after_descriptor, tf.where(terminator, pos + 1, pos + offset)))
        # Sub-blocks follow an extension's label and a descriptor.
        next_in_data = extension | descriptor | (in_data & ~terminator)
        moving = ~done & ~ended
        return (step + 1, tf.where(moving, next_pos, pos), tf.where(moving, next_in_data, in_data),
                done | ended, total)

    _, _, _, done, total = tf.while_loop(
        lambda step, pos, in_data, done, total: (step < max_steps) & tf.reduce_any(~done),
        walk,
        (_int64(0), start, tf.zeros([count], tf.bool), tf.zeros([count], tf.bool),
         tf.zeros([count], tf.int64)),
    )
    return tf.where(done, total, _int64(-1))


def _scatter(values: tf.Tensor, where: tf.Tensor, subset_values: tf.Tensor) -> tf.Tensor:
    return tf.tensor_scatter_nd_update(values, tf.where(where), subset_values)


def image_sizes(images: tf.Tensor, max_image_bytes: int | tf.Tensor = 1 << 24) -> ImageSizes:
    """Format, width, height and pixels of each encoded image of a [N] string tensor, from
    their headers alone (nothing is decoded). A GIF is walked as far as `max_image_bytes` of
    full sub-blocks reach (the most a caller accepts); one cut into smaller ones gets -1."""
    images = tf.reshape(images, [-1])
    lengths = tf.cast(tf.strings.length(images), tf.int64)
    count = tf.shape(images, out_type=tf.int64)[0]
    head = _bytes_at(images, lengths, tf.zeros([count], tf.int64), 26)
    is_png = _starts_with(head, _PNG_SIGNATURE)
    is_jpeg = _starts_with(head, _JPEG_SIGNATURE)
    is_gif = _starts_with(head, _GIF_SIGNATURE)
    is_bmp = _starts_with(head, _BMP_SIGNATURE)
    fmt = tf.zeros([count], tf.int32) + UNKNOWN
    for mask, code in ((is_bmp, BMP), (is_gif, GIF), (is_png, PNG), (is_jpeg, JPEG)):
        fmt = tf.where(mask, code, fmt)
    unknown = tf.fill([count], _int64(-1))

    has_ihdr = tf.reduce_all(head[:, 12:16] == tf.constant(_IHDR, tf.int64), axis=1)
    png_ok = is_png & has_ihdr
    width = tf.where(png_ok, _be32(head, 16), unknown)
    height = tf.where(png_ok, _be32(head, 20), unknown)
    width = tf.where(is_bmp, tf.abs(_le32_signed(head, 18)), width)
    height = tf.where(is_bmp, tf.abs(_le32_signed(head, 22)), height)
    width = tf.where(is_gif, _le16(head, 6), width)
    height = tf.where(is_gif, _le16(head, 8), height)

    jpeg_width, jpeg_height = _jpeg_frame_sizes(tf.boolean_mask(images, is_jpeg),
                                                tf.boolean_mask(lengths, is_jpeg))
    width = _scatter(width, is_jpeg, jpeg_width)
    height = _scatter(height, is_jpeg, jpeg_height)

    known = (width >= 0) & (height >= 0)
    pixels = tf.where(known, width * height, _int64(-1))
    frames = _gif_pixels(tf.boolean_mask(images, is_gif), tf.boolean_mask(lengths, is_gif),
                         tf.cast(gif_steps(max_image_bytes), tf.int64))
    gif_pixels = tf.where(frames < 0, frames, tf.maximum(tf.boolean_mask(pixels, is_gif), frames))
    pixels = _scatter(pixels, is_gif, gif_pixels)
    return ImageSizes(fmt, width, height, pixels)
