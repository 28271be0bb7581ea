"""The embedded default dataset: scikit-learn's handwritten digits as class folders.

It ships inside scikit-learn, so the README's demo runs on a fresh machine with no download.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image


def write_digits(out_dir: str, upscale: int = 4) -> str:
    """Writes the 1,797 8x8 digits as `<out_dir>/<digit>/<index>.png`, upscaled by `upscale`
    with nearest-neighbour so the pixels stay the dataset's own. Returns `out_dir`.

    Idempotent: files that already exist with the same content are left untouched, so their
    mtimes (and so the pipeline's input fingerprint and cache) stay the same.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    for index, (image, target) in enumerate(zip(digits.images, digits.target)):
        folder = os.path.join(out_dir, str(target))
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"{index:04d}.png")
        pixels = np.round(image * (255.0 / 16.0)).astype(np.uint8)
        pixels = np.kron(pixels, np.ones((upscale, upscale), dtype=np.uint8))
        if os.path.exists(path):
            with Image.open(path) as existing:
                if np.array_equal(np.asarray(existing), pixels):
                    continue
        Image.fromarray(pixels, mode="L").save(path)
    return out_dir
