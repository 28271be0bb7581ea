"""The embedded default dataset: scikit-learn's handwritten digits as class folders.

It ships inside scikit-learn, so the README's demo runs on a fresh machine with no download.
"""

from __future__ import annotations

import os
from typing import Optional

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


def extract_omniglot(
    zip_paths: list[str],
    out_dir: str,
    alphabets: Optional[list[str]] = None,
    characters_per_alphabet: Optional[int] = None,
    drawers: Optional[int] = None,
) -> str:
    """Extracts Omniglot background zips to `<out_dir>/<alphabet>/<character>/<image>.png`
    (class depth 2). Alphabets found in several zips (Greek and Latin are in both "small"
    sets, as the very same files) are written once. Optionally keeps only some alphabets, the
    first characters of each and the first drawers' images. Returns `out_dir`."""
    import zipfile

    written: set[tuple[str, str]] = set()
    kept_characters: dict[str, int] = {}
    for zip_path in zip_paths:
        with zipfile.ZipFile(zip_path) as archive:
            members = sorted(n for n in archive.namelist() if n.lower().endswith(".png"))
            by_character: dict[tuple[str, str], list[str]] = {}
            for name in members:
                parts = name.split("/")
                if len(parts) != 4:
                    continue
                _, alphabet, character, _ = parts
                if alphabets is None or alphabet in alphabets:
                    by_character.setdefault((alphabet, character), []).append(name)
            for (alphabet, character), names in sorted(by_character.items()):
                if (alphabet, character) in written:
                    continue
                if characters_per_alphabet is not None:
                    if kept_characters.get(alphabet, 0) >= characters_per_alphabet:
                        continue
                    kept_characters[alphabet] = kept_characters.get(alphabet, 0) + 1
                written.add((alphabet, character))
                folder = os.path.join(out_dir, alphabet, character)
                os.makedirs(folder, exist_ok=True)
                for name in names[:drawers] if drawers else names:
                    with open(os.path.join(folder, os.path.basename(name)), "wb") as f:
                        f.write(archive.read(name))
    if not written:
        raise ValueError(f"no Omniglot characters matched in {zip_paths}")
    return out_dir
