"""PairExampleGen's executor on real Omniglot characters and on a manifest, with real Beam."""

import csv
import json
import os

import pytest
import tensorflow as tf
from PIL import Image
from tfx.proto import example_gen_pb2
from tfx.types import standard_artifacts
from tfx.utils import proto_utils

from siamese_tfx.components.contract.config import DataConfig
from siamese_tfx.components.pair_example_gen import executor as executor_lib
from siamese_tfx.components.pair_example_gen.component import PairExampleGen, QuarantineReport


def _run(data: DataConfig, out_dir: str):
    examples = standard_artifacts.Examples()
    examples.uri = os.path.join(out_dir, "examples")
    report = QuarantineReport()
    report.uri = os.path.join(out_dir, "quarantine")
    os.makedirs(report.uri, exist_ok=True)
    executor_lib.Executor().Do(
        {},
        {executor_lib.EXAMPLES_KEY: [examples], executor_lib.QUARANTINE_KEY: [report]},
        {executor_lib.INPUT_BASE_KEY: data.image_root,
         executor_lib.DATA_CONFIG_KEY: json.dumps(data.__dict__)},
    )
    return examples, report


def _read_split(examples, split):
    pattern = os.path.join(examples.uri, f"Split-{split}", "*.gz")
    out = []
    for record in tf.data.TFRecordDataset(tf.io.gfile.glob(pattern), compression_type="GZIP"):
        ex = tf.train.Example.FromString(record.numpy())
        f = ex.features.feature
        out.append({k: (f[k].int64_list.value[0] if k == "label" else f[k].bytes_list.value[0])
                    for k in f})
    return out


def test_class_folders_give_balanced_class_disjoint_png_pairs(omniglot_tiny, tmp_path):
    data = DataConfig(image_root=omniglot_tiny, class_depth=2, num_train_pairs=40,
                      num_eval_pairs=20, eval_class_fraction=0.25, seed=3)
    examples, report = _run(data, str(tmp_path))
    train, evaluation = _read_split(examples, "train"), _read_split(examples, "eval")
    assert (len(train), len(evaluation)) == (40, 20)
    assert sum(e["label"] for e in train) == 20 and sum(e["label"] for e in evaluation) == 10
    train_classes = {e[k] for e in train for k in ("left_class", "right_class")}
    eval_classes = {e[k] for e in evaluation for k in ("left_class", "right_class")}
    assert len(eval_classes) == 2 and len(train_classes) == 6
    assert not train_classes & eval_classes
    for e in train[:5]:
        assert e["left_image"].startswith(b"\x89PNG")
        assert (e["left_class"] == e["right_class"]) == (e["label"] == 1)
    assert json.loads(examples.split_names) == ["train", "eval"]
    summary = json.load(open(os.path.join(report.uri, "summary.json")))
    assert summary["quarantined"] == 0 and summary["inputs"] == 80
    # Same seed, same examples.
    again, _ = _run(data, str(tmp_path / "again"))
    assert _read_split(again, "eval") == evaluation


def _image(path, size=(12, 10), fmt=None, mode="L"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new(mode, size, color=128).save(path, format=fmt)


def test_manifest_mode_reports_bad_rows_and_keeps_good_ones(tmp_path):
    root = tmp_path / "images"
    rows = []
    for c in range(6):
        for i in range(3):
            fmt = ["PNG", "JPEG", "BMP", "PPM"][(c + i) % 4]
            ext = {"PNG": "png", "JPEG": "jpg", "BMP": "bmp", "PPM": "pgm"}[fmt]
            _image(str(root / f"c{c}" / f"{i}.{ext}"), fmt=fmt)
    files = {c: sorted(os.listdir(root / f"c{c}")) for c in range(6)}
    for c in range(6):
        rows.append((f"c{c}/{files[c][0]}", f"c{c}/{files[c][1]}", 1))
        rows.append((f"c{c}/{files[c][0]}", f"c{(c + 1) % 6}/{files[(c + 1) % 6][2]}", 0))
    (root / "c0" / "broken.png").write_bytes(b"not an image at all")
    bad = [("c0/missing.png", f"c0/{files[0][0]}", 1), ("../../etc/passwd", f"c0/{files[0][0]}", 1),
           (f"c1/{files[1][0]}", f"c1/{files[1][1]}", 2), rows[0],
           ("c0/broken.png", f"c0/{files[0][1]}", 1)]
    with open(root / "pairs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["left", "right", "label", "split"])
        for i, r in enumerate(rows + bad):
            w.writerow(list(r) + ["eval" if i % 4 == 3 else "train"])
    data = DataConfig(image_root=str(root), manifest="pairs.csv", max_quarantined=10)
    examples, report = _run(data, str(tmp_path / "out"))
    quarantine = list(csv.DictReader(open(os.path.join(report.uri, "quarantine.csv"))))
    reasons = " | ".join(q["reason"] for q in quarantine)
    assert len(quarantine) == 5, reasons
    for needle in ("does not exist", "leaves the image root", "label must be 0 or 1",
                   "duplicate of the pair on line 2", "cannot decode image"):
        assert needle in reasons
    written = len(_read_split(examples, "train")) + len(_read_split(examples, "eval"))
    summary = json.load(open(os.path.join(report.uri, "summary.json")))
    assert written == len(rows) == summary["pairs"]["train"] + summary["pairs"]["eval"]
    assert written + summary["quarantined"] == summary["inputs"] == len(rows) + len(bad)


def test_default_limit_stops_with_the_report_named(tmp_path):
    root = tmp_path / "images"
    for c in range(5):
        for i in range(3):
            _image(str(root / f"c{c}" / f"{i}.png"))
    (root / "c4" / "2.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    data = DataConfig(image_root=str(root), num_train_pairs=6, num_eval_pairs=4,
                      eval_class_fraction=0.4)
    with pytest.raises(executor_lib.QuarantineLimitExceeded) as err:
        _run(data, str(tmp_path / "out"))
    message = str(err.value)
    assert "1 input(s) quarantined" in message and "c4/2.png" in message
    assert os.path.join(str(tmp_path / "out"), "quarantine", "quarantine.csv") in message


def test_component_declares_fingerprinted_inputs():
    data = DataConfig(image_root="/data/omniglot", class_depth=2)
    component = PairExampleGen(data)
    config = component.exec_properties["input_config"]
    if isinstance(config, str):
        config = proto_utils.json_to_proto(config, example_gen_pb2.Input())
    split = config.splits[0]
    assert split.pattern == "*/*/*"
    assert set(component.outputs) == {"examples", "quarantine"}
    with pytest.raises(ValueError, match="image_root"):
        PairExampleGen(DataConfig())
