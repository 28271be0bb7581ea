"""Reading one image file and canonicalising it to PNG, or saying precisely why not."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import Optional

from PIL import Image

# Extensions the pipeline accepts; anything else found where images are expected is reported.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".pgm", ".ppm", ".pnm", ".gif")
_PIL_FORMATS = {"PNG", "JPEG", "MPO", "BMP", "PPM", "GIF"}  # PPM covers PGM/PBM/PNM.
_GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}


@dataclass(frozen=True)
class CanonicalImage:
    """An image re-encoded as PNG (mode L for greyscale sources, RGB otherwise), or the reason
    it could not be."""

    path: str
    png: Optional[bytes] = None
    width: int = 0
    height: int = 0
    error: str = ""


def has_image_extension(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def canonicalize(path: str, data: bytes, max_pixels: int) -> CanonicalImage:
    """Decodes `data` (the bytes of `path`) fully and re-encodes it as PNG.

    Never raises on bad data: a truncated or corrupt file, an unsupported format or an image of
    more than `max_pixels` pixels comes back with `error` set.
    """
    if not data:
        return CanonicalImage(path, error="empty file")
    # Pillow refuses images above its own limit (178,956,970 pixels by default) when it opens
    # them: the configured limit is the one that applies, checked below from the header before
    # any pixel is decoded, so Pillow's is lifted.
    Image.MAX_IMAGE_PIXELS = None
    try:
        img = Image.open(io.BytesIO(data))
        with img:
            if img.format not in _PIL_FORMATS:
                return CanonicalImage(path, error=f"unsupported image format {img.format}")
            width, height = img.size
            if width * height > max_pixels:
                return CanonicalImage(
                    path,
                    error=f"image is {width}x{height} = {width * height} pixels, "
                    f"above the limit of {max_pixels} (--max-image-pixels)",
                )
            img.load()  # Decodes every pixel: truncation shows here, not later in Transform.
            converted = img.convert("L" if img.mode in _GREY_MODES else "RGB")
            out = io.BytesIO()
            converted.save(out, format="PNG")
            return CanonicalImage(path, out.getvalue(), width, height)
    except Image.UnidentifiedImageError:
        # Pillow's own message names an in-memory buffer's address: not useful in a report.
        return CanonicalImage(
            path, error="cannot decode image: not a PNG, JPEG, BMP, PGM/PPM or GIF file")
    except Exception as e:  # noqa: BLE001 - any decoder failure is a property of the file.
        return CanonicalImage(path, error=f"cannot decode image: {type(e).__name__}: {e}")
