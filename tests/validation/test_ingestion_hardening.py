"""Ingestion edge cases that must be reported, not crash or leak: symlinks out of the image root
in class folders, undecodable manifest bytes, and the drift statistics' image size reader."""

import io
import os

from PIL import Image

from siamese_tfx.components.pair_example_gen import inputs as inputs_lib
from siamese_tfx.components.validation_gate import executor as gate_lib


def _png(path, size=(12, 10)):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("L", size, color=128).save(path, format="PNG")


def test_class_folder_symlink_leaving_the_root_is_rejected(tmp_path):
    root = tmp_path / "images"
    for c in ("a", "b"):
        for i in range(2):
            _png(str(root / c / f"{i}.png"))
    _png(str(tmp_path / "outside" / "secret.png"))
    os.symlink(tmp_path / "outside" / "secret.png", root / "a" / "evil.png")
    os.symlink(root / "b" / "0.png", root / "a" / "inside.png")  # Stays in the root: kept.
    classes, rejected = inputs_lib.list_class_folders(str(root), 1)
    assert sorted(classes["a"]) == ["a/0.png", "a/1.png", "a/inside.png"]
    assert [(r.item, r.reason) for r in rejected] == [
        ("a/evil.png", "a link that leaves the image root")]


def test_manifest_with_undecodable_bytes_rejects_the_row_not_the_run(tmp_path):
    root = tmp_path / "images"
    _png(str(root / "a" / "0.png"))
    _png(str(root / "a" / "1.png"))
    (root / "pairs.csv").write_bytes(
        b"left,right,label\na/0.png,a/1.png,1\na/\xff\xfe.png,a/1.png,1\na/0.png,a/\x00.png,0\n")
    pairs, rejected = inputs_lib.read_manifest(str(root / "pairs.csv"), str(root))
    assert [p.row for p in pairs] == [2]
    assert [r.row for r in rejected] == [3, 4]
    assert all("does not exist" in r.reason for r in rejected)


def test_image_size_reads_png_headers_and_other_formats():
    out = io.BytesIO()
    Image.new("L", (30, 20)).save(out, format="PNG")
    assert gate_lib.image_size(out.getvalue()) == (20, 30)
    out = io.BytesIO()
    Image.new("L", (7, 9)).save(out, format="JPEG")
    assert gate_lib.image_size(out.getvalue()) == (9, 7)
    assert gate_lib.image_size(b"not an image") == (0, 0)
