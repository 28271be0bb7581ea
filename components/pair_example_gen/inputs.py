"""Turning the two input layouts — class folders and a pairs manifest — into candidate pairs and
a list of rejected inputs, before any image is read.

Every input ends up either in a pair or in a `Rejection` with its reason: nothing is dropped.
"""

from __future__ import annotations

import csv
import io
import os
import posixpath
import stat
from dataclasses import dataclass
from typing import Iterable, Optional

from tfx.dsl.io import fileio

from siamese_tfx.components.contract import errors
from siamese_tfx.components.pair_example_gen import sampling
from siamese_tfx.components.pair_example_gen.images import has_image_extension

_EXTRA_FIELDS = "\0extra"  # where csv puts a row's fields beyond the header's
MANIFEST_COLUMNS = ("left", "right", "label")
OPTIONAL_MANIFEST_COLUMNS = ("left_class", "right_class", "split")


@dataclass(frozen=True)
class Rejection:
    """One input that does not become a pair, with where it came from and why."""

    source: str  # The file (image or manifest) the problem is in.
    row: int  # 1-based manifest line number; 0 when not a manifest row.
    item: str  # The image path or the row's text.
    reason: str


@dataclass(frozen=True)
class ManifestPair:
    """A manifest row that passed the row checks; its images are still to be read."""

    row: int
    pair: sampling.Pair
    split: str  # "" when the manifest leaves the split to the class assignment.


def class_pattern(image_root: str, class_depth: int) -> str:
    """The glob that matches every file directly inside a class folder."""
    return os.path.join(image_root, *(["*"] * class_depth), "*")


def list_class_folders(
    image_root: str, class_depth: int
) -> tuple[dict[str, list[str]], list[Rejection]]:
    """Finds `<root>/<c_1>/.../<c_depth>/<image>` files.

    Returns ({class name "c_1/.../c_depth": [image paths relative to the root]}, rejections for
    every other file under the root: files outside that layout (directly under the root, or in
    a sub-folder of a class folder), and files that are not images by their extension).
    """
    if not fileio.isdir(image_root):
        raise errors.UsageError(f"--image-root {image_root!r} is not a folder")
    classes: dict[str, list[str]] = {}
    rejected: list[Rejection] = []
    layout = "/".join(["<class>"] * class_depth)
    for path in _files_under(image_root):
        rel = os.path.relpath(path, image_root)
        depth = len(rel.split(os.sep)) - 1
        if depth != class_depth:
            rejected.append(Rejection(
                path, 0, rel, f"outside the class layout <root>/{layout}/<image> "
                f"(--class-depth {class_depth}): the file is {depth} folder(s) deep"))
            continue
        if _leaves_root(image_root, path):
            rejected.append(Rejection(path, 0, rel, "a link that leaves the image root"))
            continue
        if not has_image_extension(rel):
            rejected.append(Rejection(path, 0, rel, "not an image file (by its extension)"))
            continue
        classes.setdefault(os.path.dirname(rel), []).append(rel)
    if not classes:
        raise errors.DataError(
            f"no images found under {image_root!r} at class depth {class_depth} "
            f"(looked for {class_pattern(image_root, class_depth)!r})"
        )
    return classes, rejected


def _files_under(root: str) -> list[str]:
    """Every non-folder entry below `root`, sorted."""
    found = []
    for folder, _, files in fileio.walk(root):
        found.extend(os.path.join(folder, name) for name in files)
    return sorted(found)


def unreadable_reason(path: str, max_bytes: int) -> Optional[str]:
    """Why the file at `path` must not be read as an image (not a regular file, or larger than
    `max_bytes`), or None. Checked before opening: opening a FIFO blocks forever."""
    if "://" in path:
        try:
            size = fileio.stat(path).length
        except Exception as e:  # noqa: BLE001 - reported as the file's problem.
            return f"cannot read file: {type(e).__name__}: {e}"
    else:
        try:
            info = os.stat(path)
        except OSError as e:
            return f"cannot read file: {e.strerror or e}"
        if not stat.S_ISREG(info.st_mode):
            kind = ("a FIFO" if stat.S_ISFIFO(info.st_mode) else
                    "a socket" if stat.S_ISSOCK(info.st_mode) else
                    "a device" if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode) else
                    "a folder" if stat.S_ISDIR(info.st_mode) else "not a file")
            return f"not a regular file ({kind}): only regular files are read"
        size = info.st_size
    if size > max_bytes:
        return f"file is {size} bytes, above the limit of {max_bytes} bytes (--max-image-bytes)"
    return None


def read_manifest(
    manifest_path: str, image_root: str
) -> tuple[list[ManifestPair], list[Rejection]]:
    """Parses and checks a `left,right,label[,left_class,right_class,split]` CSV.

    A row is rejected when it has more fields than the header; when a path is empty, absolute,
    leaves the image root (`..` or a symlink pointing outside it) or does not exist; when both
    paths name the same file; when the label is not 0 or 1; when the split is not train/eval; or
    when it repeats an earlier pair (in either order).
    """
    if not fileio.exists(manifest_path) or fileio.isdir(manifest_path):
        raise errors.UsageError(f"--manifest {manifest_path!r} is not a file")
    with fileio.open(manifest_path, "rb") as f:
        raw = f.read()
    # Undecodable bytes become U+FFFD: such a row names no existing file and is rejected, rather
    # than the whole manifest failing to decode.
    text = raw.decode("utf-8-sig", errors="replace").replace("\0", "\ufffd")
    reader = csv.DictReader(io.StringIO(text), restkey=_EXTRA_FIELDS)
    missing = [c for c in MANIFEST_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise errors.DataError(
            f"{manifest_path}: header must name columns {list(MANIFEST_COLUMNS)}; "
            f"missing {missing} (found {reader.fieldnames})"
        )
    pairs: list[ManifestPair] = []
    rejected: list[Rejection] = []
    seen: dict[tuple[str, str], int] = {}
    for row in reader:
        line = reader.line_num
        extra = row.pop(_EXTRA_FIELDS, None)
        item = ",".join(str(row.get(c) or "") for c in reader.fieldnames or [])
        paths, reason = [], ""
        if extra is not None:
            reason = (f"{len(reader.fieldnames or []) + len(extra)} fields, but the header names "
                      f"{len(reader.fieldnames or [])}: extra {extra!r}")
            item = ",".join([item] + [str(x) for x in extra])
        for column in ("left", "right"):
            path, problem = _resolve(image_root, row.get(column) or "")
            if problem:
                reason = reason or f"{column}: {problem}"
            paths.append(path)
        if not reason and paths[0] == paths[1]:
            reason = f"left and right are the same file {paths[0]!r}"
        if not reason and _same_file(image_root, *paths):
            reason = f"left {paths[0]!r} and right {paths[1]!r} are the same file (linked)"
        label = (row.get("label") or "").strip()
        if not reason and label not in ("0", "1"):
            reason = f"label must be 0 or 1, got {label!r}"
        split = (row.get("split") or "").strip()
        if not reason and split not in ("",) + sampling.SPLITS:
            reason = f"split must be one of {sampling.SPLITS} or empty, got {split!r}"
        if not reason:
            key = tuple(sorted(paths))
            if key in seen:
                reason = f"duplicate of the pair on line {seen[key]}"
            else:
                seen[key] = line
        if reason:
            rejected.append(Rejection(manifest_path, line, item, reason))
            continue
        left, right = paths
        pairs.append(
            ManifestPair(
                line,
                sampling.Pair(
                    left,
                    right,
                    int(label),
                    (row.get("left_class") or "").strip() or posixpath.dirname(left),
                    (row.get("right_class") or "").strip() or posixpath.dirname(right),
                ),
                split,
            )
        )
    return pairs, rejected


def assign_manifest_splits(
    rows: Iterable[ManifestPair], eval_fraction: float, seed: int, manifest_path: str
) -> tuple[dict[str, list[sampling.Pair]], list[Rejection]]:
    """Puts manifest pairs into train/eval so that no class is in both.

    Rows with an explicit split keep it. The others go where both their classes were assigned
    (by `sampling.split_classes`); a pair whose classes fall on different sides cannot be used
    without leaking a class across splits, and is rejected with that reason.
    """
    rows = list(rows)
    out: dict[str, list[sampling.Pair]] = {s: [] for s in sampling.SPLITS}
    rejected: list[Rejection] = []
    auto = [r for r in rows if not r.split]
    side: dict[str, str] = {}
    if auto:
        classes = {c for r in auto for c in (r.pair.left_class, r.pair.right_class)}
        train, evaluation = sampling.split_classes(sorted(classes), eval_fraction, seed)
        side = {c: sampling.TRAIN for c in train} | {c: sampling.EVAL for c in evaluation}
    for r in rows:
        split = r.split or side[r.pair.left_class]
        if not r.split and side[r.pair.right_class] != split:
            rejected.append(
                Rejection(
                    manifest_path,
                    r.row,
                    f"{r.pair.left},{r.pair.right},{r.pair.label}",
                    f"classes {r.pair.left_class!r} and {r.pair.right_class!r} were assigned to "
                    "different splits; give the row a split column to keep it",
                )
            )
            continue
        out[split].append(r.pair)
    return out, rejected


def _resolve(image_root: str, raw: str) -> tuple[str, Optional[str]]:
    """Checks a manifest path; returns (normalised relative path, problem or None)."""
    path = raw.strip()
    if not path:
        return path, "empty path"
    if path.startswith("/") or posixpath.isabs(path) or "://" in path:
        return path, f"absolute path {path!r} is not allowed (paths are relative to the image root)"
    norm = posixpath.normpath(path)
    if norm == ".." or norm.startswith("../"):
        return path, f"path {path!r} leaves the image root"
    full = os.path.join(image_root, norm)
    if _leaves_root(image_root, full):
        return path, f"path {path!r} is a link that leaves the image root"
    if not fileio.exists(full):
        return path, f"file {path!r} does not exist under the image root"
    return norm, None


def _same_file(image_root: str, left: str, right: str) -> bool:
    """Whether two existing local paths under the root are one file (a link to the other)."""
    if "://" in image_root:
        return False
    try:
        return os.path.samefile(os.path.join(image_root, left), os.path.join(image_root, right))
    except OSError:
        return False


def _leaves_root(image_root: str, full_path: str) -> bool:
    """Whether a local path resolves (through symlinks) outside the image root."""
    if "://" in image_root:
        return False
    real_root = os.path.realpath(image_root)
    return os.path.commonpath([os.path.realpath(full_path), real_root]) != real_root
