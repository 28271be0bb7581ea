"""Identification against a gallery: an exported model plus enrolled identities, served as ONE
SavedModel with an `identify` signature, so tensorflow/serving answers "who is this?" itself.

A gallery is class folders (`<dir>/<label>/<image>`) or a manifest CSV with columns
`image,label` (paths relative to the manifest's folder), one or more exemplars per identity.
`build_gallery_model` embeds the exemplars with the model's own `embed` signature and saves the
model again with the embeddings and labels as variables and a new signature:

- `identify`: image (encoded bytes) [batch] -> labels, distances, similarities [batch, k] (the
  k nearest identities, nearest first) and known [batch] (the nearest within the model's
  calibrated match threshold, or the threshold the build was given; otherwise the query is
  "unknown"). similarities are compare's similarity of those distances at that threshold.

The search is exact: one matrix product gives every query's Euclidean distance to every stored
vector, an identity's distance is its nearest exemplar's (`aggregate="nearest"`) or its mean
embedding's (`aggregate="mean"`), and top_k picks the k nearest. That distance is the model's
own only for the euclidean head (distance = ||embed(a) - embed(b)||), which the build checks on
the gallery through `compare`. `identify` checks each request as the other signatures do, with
the same stored limits (batch, bytes, declared pixels; export.py), before decoding anything. The
model's `serving_default`, `compare` and `embed` are kept as they were.

`write_next_version` writes the result as the next version of a served model: built in a
temporary folder beside the model's folder and renamed into place, so a hot-loading server
never sees half a version. `<version>/assets/gallery.json` records the gallery's version and
the fingerprint of its files.
"""

from __future__ import annotations

import csv
import datetime
import hashlib
import io
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import tensorflow as tf

from siamese_tfx.components.contract import signatures
# The signatures' own request checks, so identify refuses exactly what the others refuse.
from siamese_tfx.components.trainer.export import (_BELOW_HALF, _after, _checked_batch,
                                                  _checked_images)
from siamese_tfx.serving.warmup import write_warmup_requests

AGGREGATES = signatures.GALLERY_AGGREGATES
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".pgm", ".ppm", ".pnm", ".tif",
                    ".tiff", ".webp")
_DECODABLE = (".png", ".jpg", ".jpeg", ".gif", ".bmp")  # what the model's decoder reads
_EUCLIDEAN_TOLERANCE = 1e-3  # |compare distance - embedding distance| of the euclidean head


@dataclass(frozen=True)
class GalleryEntry:
    """One exemplar: its image file and the identity it shows."""

    path: str
    label: str


def read_gallery(source: str, class_depth: int = 1) -> list[GalleryEntry]:
    """The exemplars of a gallery: class folders (`class_depth` folder levels name the
    identity) or a manifest CSV `image,label` (paths relative to its folder). Raises ValueError
    naming the folder, file or row that cannot be used."""
    if os.path.isdir(source):
        entries = []
        root = os.path.abspath(source)
        for folder, _, files in sorted(os.walk(root)):
            rel = os.path.relpath(folder, root)
            depth = 0 if rel == os.curdir else rel.count(os.sep) + 1
            if depth != class_depth:
                continue
            for name in sorted(files):
                if name.lower().endswith(IMAGE_EXTENSIONS):
                    entries.append(GalleryEntry(os.path.join(folder, name), rel))
        if not entries:
            raise ValueError(f"gallery {source}: no images at class depth {class_depth} "
                             f"(<gallery>/<label>/<image>, extensions {', '.join(_DECODABLE)}, "
                             "...)")
        return entries
    if not os.path.isfile(source):
        raise ValueError(f"gallery {source}: no such folder or manifest file")
    root = os.path.dirname(os.path.abspath(source))
    with open(source, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in ("image", "label") if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"gallery manifest {source}: no column(s) {missing} in its header "
                             f"{reader.fieldnames} (expected image,label)")
        entries = []
        for line, row in enumerate(reader, start=2):
            image, label = (row["image"] or "").strip(), (row["label"] or "").strip()
            if not image or not label:
                raise ValueError(f"gallery manifest {source} line {line}: empty "
                                 f"{'image' if not image else 'label'}")
            path = os.path.join(root, image)
            if not os.path.isfile(path):
                raise ValueError(f"gallery manifest {source} line {line}: image {image!r} not "
                                 f"found (looked for {path})")
            entries.append(GalleryEntry(path, label))
    if not entries:
        raise ValueError(f"gallery manifest {source}: no rows")
    return entries


def read_image(path: str) -> bytes:
    """Encoded bytes the model decodes: the file itself for PNG, JPEG, GIF and BMP, else the
    image converted to PNG."""
    if path.lower().endswith(_DECODABLE):
        with open(path, "rb") as f:
            return f.read()
    from PIL import Image

    buffer = io.BytesIO()
    with Image.open(path) as image:
        image.save(buffer, format="PNG")
    return buffer.getvalue()


def fingerprint(entries: Sequence[GalleryEntry], images: Sequence[bytes]) -> str:
    """sha256 over every exemplar's label, file name and bytes, in a fixed order."""
    digest = hashlib.sha256()
    for entry, image in sorted(zip(entries, images), key=lambda e: (e[0].label, e[0].path)):
        digest.update(f"{entry.label}\0{os.path.basename(entry.path)}\0".encode())
        digest.update(hashlib.sha256(image).digest())
    return digest.hexdigest()


def embed(loaded: Any, images: Sequence[bytes], batch_size: int = 64) -> np.ndarray:
    """The model's `embed` signature over encoded images, [N, D]."""
    function = loaded.signatures[signatures.EMBED]
    parts = [function(**{signatures.EMBED_INPUT: tf.constant(list(images[i:i + batch_size]))})
             [signatures.EMBEDDING].numpy() for i in range(0, len(images), batch_size)]
    return np.concatenate(parts).astype(np.float32)


def gallery_vectors(embeddings: np.ndarray, labels: Sequence[str], aggregate: str
                    ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(vectors [V, D], each vector's identity index [V], identities sorted): every exemplar
    for "nearest", one mean embedding per identity for "mean"."""
    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate {aggregate!r}: expected one of {AGGREGATES}")
    identities = sorted(set(labels))
    index = {label: i for i, label in enumerate(identities)}
    ids = np.array([index[label] for label in labels], dtype=np.int32)
    if aggregate == "nearest":
        return embeddings.astype(np.float32), ids, identities
    means = np.stack([embeddings[ids == i].mean(axis=0) for i in range(len(identities))])
    return means.astype(np.float32), np.arange(len(identities), dtype=np.int32), identities


def _temperature(loaded: Any, images: Sequence[bytes], embeddings: np.ndarray) -> float:
    """The similarity's temperature of the model, read back from `compare` on gallery pairs
    (similarity = sigmoid((threshold - distance) / temperature)); also checks that compare's
    distance is the Euclidean distance of the embeddings (the euclidean head), which the
    matrix-product search assumes. Raises ValueError when it is not."""
    n = len(images)
    pairs = [(i, (i + 1) % n) for i in range(min(n, 32))] + [(i, i) for i in range(min(n, 8))]
    left, right = zip(*pairs)
    left_key, right_key = signatures.COMPARE_INPUTS
    out = loaded.signatures[signatures.COMPARE](**{
        left_key: tf.constant([images[i] for i in left]),
        right_key: tf.constant([images[j] for j in right])})
    distance = out[signatures.DISTANCE].numpy().astype(np.float64)
    similarity = out[signatures.SIMILARITY].numpy().astype(np.float64)
    euclidean = np.linalg.norm(embeddings[list(left)] - embeddings[list(right)], axis=1)
    worst = int(np.argmax(np.abs(distance - euclidean)))
    if abs(distance[worst] - euclidean[worst]) > _EUCLIDEAN_TOLERANCE:
        raise ValueError(
            "identify searches by Euclidean distance of embeddings (the euclidean head), but "
            f"this model's compare distance of gallery images {left[worst]} and {right[worst]} "
            f"is {distance[worst]:.6f} where their embeddings are {euclidean[worst]:.6f} apart: "
            "build galleries from a --head euclidean model")
    threshold = float(getattr(loaded, signatures.THRESHOLD_ATTR).numpy())
    usable = ((similarity > 1e-4) & (similarity < 1 - 1e-4) & (similarity != 0.5)
              & (similarity != _BELOW_HALF) & (np.abs(threshold - distance) > 1e-3))
    if not usable.any():
        raise ValueError("cannot read the model's similarity temperature from compare on the "
                         "gallery's images (every similarity saturated or at the threshold)")
    best = int(np.argmin(np.where(usable, np.abs(similarity - 0.5), np.inf)))
    logit = np.log(similarity[best] / (1 - similarity[best]))
    return float((threshold - distance[best]) / logit)


class GalleryModel(tf.Module):
    """The served model (`base`, a loaded SavedModel, kept whole) plus the gallery and
    `identify`."""

    def __init__(self, base: Any, vectors: np.ndarray, ids: np.ndarray,
                 identities: Sequence[str], top_k: int, temperature: float,
                 threshold: float | None = None) -> None:
        super().__init__()
        self.base = base
        for name in (signatures.THRESHOLD_ATTR,) + signatures.LIMIT_ATTRS:
            setattr(self, name, getattr(base, name))  # the same variables, stored once
        setattr(self, signatures.GALLERY_EMBEDDINGS_ATTR, tf.Variable(
            vectors, trainable=False, name=signatures.GALLERY_EMBEDDINGS_ATTR))
        setattr(self, signatures.GALLERY_IDENTITIES_ATTR, tf.Variable(
            ids, trainable=False, name=signatures.GALLERY_IDENTITIES_ATTR))
        setattr(self, signatures.GALLERY_LABELS_ATTR, tf.Variable(
            list(identities), trainable=False, dtype=tf.string,
            name=signatures.GALLERY_LABELS_ATTR))
        setattr(self, signatures.IDENTIFY_TOP_K_ATTR, tf.Variable(
            top_k, trainable=False, dtype=tf.int64, name=signatures.IDENTIFY_TOP_K_ATTR))
        calibrated = float(getattr(base, signatures.THRESHOLD_ATTR).numpy())
        setattr(self, signatures.IDENTIFY_THRESHOLD_ATTR, tf.Variable(
            calibrated if threshold is None else threshold, trainable=False, dtype=tf.float32,
            name=signatures.IDENTIFY_THRESHOLD_ATTR))
        self._top_k = top_k
        self._num_identities = len(identities)
        self._temperature = temperature
        self._embed = base.signatures[signatures.EMBED]

    @tf.function(input_signature=[
        tf.TensorSpec([None], tf.string, name=signatures.IDENTIFY_INPUT)])
    def identify(self, image: tf.Tensor) -> dict[str, tf.Tensor]:
        checks = _checked_batch(self, signatures.IDENTIFY, {signatures.IDENTIFY_INPUT: image})
        image = _checked_images(self, _after(checks, tf.reshape(image, [-1])),
                                signatures.IDENTIFY_INPUT)
        query = self._embed(**{signatures.EMBED_INPUT: image})[signatures.EMBEDDING]
        vectors = getattr(self, signatures.GALLERY_EMBEDDINGS_ATTR)
        squared = (tf.reduce_sum(tf.square(query), 1, keepdims=True)
                   + tf.reduce_sum(tf.square(vectors), 1)[tf.newaxis, :]
                   - 2.0 * tf.matmul(query, vectors, transpose_b=True))
        distance = tf.sqrt(tf.maximum(squared, 0.0))  # [batch, vectors]
        per_identity = tf.transpose(tf.math.unsorted_segment_min(
            tf.transpose(distance), getattr(self, signatures.GALLERY_IDENTITIES_ATTR),
            self._num_identities))  # [batch, identities]
        negated, index = tf.math.top_k(-per_identity, k=self._top_k)
        nearest = -negated
        threshold = getattr(self, signatures.IDENTIFY_THRESHOLD_ATTR)
        match = nearest <= threshold
        similarity = tf.sigmoid((threshold - nearest) / self._temperature)
        similarity = tf.where(match, tf.maximum(similarity, 0.5),
                              tf.minimum(similarity, _BELOW_HALF))
        return {
            signatures.LABELS: tf.gather(getattr(self, signatures.GALLERY_LABELS_ATTR), index),
            signatures.DISTANCES: nearest,
            signatures.SIMILARITIES: similarity,
            signatures.KNOWN: match[:, 0],
        }


def load_model(model_dir: str) -> Any:
    """The exported model at `model_dir`; ValueError unless it has `embed` and stores its
    threshold and limits."""
    base = tf.saved_model.load(model_dir)
    missing = [name for name in (signatures.THRESHOLD_ATTR,) + signatures.LIMIT_ATTRS
               if getattr(base, name, None) is None]
    if signatures.EMBED not in base.signatures:
        missing.append(f"the {signatures.EMBED} signature")
    if missing:
        raise ValueError(f"--model {model_dir}: not an exported Siamese model with the embed "
                         f"signature and its stored threshold and limits (lacks {missing})")
    return base


def gallery_module(base: Any, entries: Sequence[GalleryEntry], aggregate: str = "nearest",
                   top_k: int = 5, threshold: float | None = None
                   ) -> tuple[GalleryModel, list[bytes], dict]:
    """The gallery model of the loaded model `base` and the exemplars `entries`, their encoded
    images, and what `assets/gallery.json` records of it. `threshold`: identify's (None: the
    model's calibrated match threshold)."""
    if top_k < 1:
        raise ValueError(f"top_k {top_k}: must be at least 1")
    images = [read_image(entry.path) for entry in entries]
    embeddings = embed(base, images)
    temperature = _temperature(base, images, embeddings)
    vectors, ids, identities = gallery_vectors(embeddings, [e.label for e in entries], aggregate)
    k = min(top_k, len(identities))
    info = {
        "gallery_fingerprint": fingerprint(entries, images),
        "identities": len(identities),
        "exemplars": len(entries),
        "aggregate": aggregate,
        "top_k": k,
        "identify_threshold": threshold,
        "match_threshold": float(getattr(base, signatures.THRESHOLD_ATTR).numpy()),
        "embedding_size": int(vectors.shape[1]),
        "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    return GalleryModel(base, vectors, ids, identities, k, temperature, threshold), images, info


def build_gallery_model(model_dir: str, entries: Sequence[GalleryEntry], export_dir: str,
                        model_name: str, aggregate: str = "nearest", top_k: int = 5,
                        threshold: float | None = None, record: dict | None = None) -> dict:
    """Saves the model at `model_dir` with the gallery `entries` and `identify` to `export_dir`
    (which must not exist), with warmup requests for every signature. Returns what
    `assets/gallery.json` records (`record` is added to it)."""
    base = load_model(model_dir)
    module, images, info = gallery_module(base, entries, aggregate, top_k, threshold)
    functions = {name: base.signatures[name] for name in signatures.CONTRACT
                 if name in base.signatures}
    functions[signatures.IDENTIFY] = module.identify.get_concrete_function()
    tf.saved_model.save(module, export_dir, signatures=functions)
    info.update(source_model=model_dir if "://" in model_dir else os.path.abspath(model_dir),
                **(record or {}))
    assets = os.path.join(export_dir, "assets")  # a local path or a URI (GalleryBuilder's)
    tf.io.gfile.makedirs(assets)
    with tf.io.gfile.GFile(os.path.join(assets, signatures.GALLERY_ASSET), "w") as f:
        f.write(json.dumps(info, indent=2))
    write_warmup_requests(export_dir, model_name, images[:2], identify=True)
    return info


def read_gallery_record(saved_model_dir: str) -> dict | None:
    """`assets/gallery.json` of a gallery model (None for a model without a gallery)."""
    path = os.path.join(saved_model_dir, "assets", signatures.GALLERY_ASSET)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def _versions(model_base_dir: str) -> list[int]:
    if not os.path.isdir(model_base_dir):
        return []
    return [int(n) for n in os.listdir(model_base_dir) if n.isascii() and n.isdigit()]


def write_next_version(model_dir: str, gallery: str, serving_dir: str, model_name: str,
                       aggregate: str = "nearest", top_k: int = 5, class_depth: int = 1,
                       threshold: float | None = None) -> tuple[str, dict]:
    """Builds the gallery model of `model_dir` and the gallery at `gallery` (folder or
    manifest) as the next version under `serving_dir/model_name/`. Returns (its path, its
    gallery record)."""
    entries = read_gallery(gallery, class_depth)
    model_base_dir = os.path.join(serving_dir, model_name)
    os.makedirs(model_base_dir, exist_ok=True)
    version = max(_versions(model_base_dir), default=0) + 1
    previous = read_gallery_record(os.path.join(model_base_dir, str(version - 1)))
    # Beside the model's folder (same file system, so the rename is atomic), never inside it.
    scratch = tempfile.mkdtemp(prefix=f".{model_name}-gallery-", dir=serving_dir)
    try:
        staged = os.path.join(scratch, str(version))
        record = build_gallery_model(model_dir, entries, staged, model_name, aggregate, top_k,
                                     threshold, {
            "gallery_version": version, "gallery_source": os.path.abspath(gallery),
            "previous_gallery_fingerprint": (previous or {}).get("gallery_fingerprint")})
        target = os.path.join(model_base_dir, str(version))
        if os.path.exists(target):
            raise FileExistsError(f"{target} appeared while the gallery was built; run again")
        os.rename(staged, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target, record
