"""PairExampleGen's Beam job on a fuzz corpus: 510 real Omniglot PNGs, and JPEG and PGM copies
of them, mutated with random bit flips and truncations (fixed seed). The job never raises, and
every file ends up either in an example or in the quarantine report, never both, never lost."""

import collections
import csv
import io
import json
import os
import random

import pytest
import tensorflow as tf
from PIL import Image
from tfx.types import standard_artifacts

from siamese_tfx.components.contract.config import DataConfig
from siamese_tfx.components.pair_example_gen import executor as executor_lib
from siamese_tfx.components.pair_example_gen.component import QuarantineReport

pytestmark = [pytest.mark.slow]

PER_FORMAT = 170  # x 3 formats = 510 mutated files.


def _sources(omniglot_root: str) -> list[bytes]:
    paths = sorted(os.path.join(d, f) for d, _, files in os.walk(omniglot_root) for f in files
                   if f.endswith(".png"))
    return [open(p, "rb").read() for p in paths]


def _encode(png: bytes, fmt: str) -> bytes:
    if fmt == "PNG":
        return png
    out = io.BytesIO()
    with Image.open(io.BytesIO(png)) as image:
        image.convert("L").save(out, format="JPEG" if fmt == "JPEG" else "PPM")
    return out.getvalue()


def mutate(data: bytes, rng: random.Random) -> bytes:
    """Bit flips (often in the header, where decoders are most fragile), a truncation, or
    both."""
    data = bytearray(data)
    kind = rng.choice(("flip", "truncate", "both"))
    if kind in ("flip", "both"):
        for _ in range(rng.randint(1, 12)):
            at = rng.randrange(min(len(data), 64)) if rng.random() < 0.5 else rng.randrange(
                len(data))
            data[at] ^= 1 << rng.randrange(8)
    if kind in ("truncate", "both"):
        data = data[: rng.randrange(0, len(data))]
    return bytes(data)


def test_no_mutated_file_crashes_the_job_and_none_is_lost(omniglot_tiny, tmp_path):
    rng = random.Random(20261125)
    sources = _sources(omniglot_tiny)
    root = tmp_path / "images"
    os.makedirs(root / "good")
    good = []
    for i, png in enumerate(sources[:4]):
        (root / "good" / f"{i}.png").write_bytes(png)
        good.append(f"good/{i}.png")
    rows, fuzzed = [], []
    for fmt, ext in (("PNG", "png"), ("JPEG", "jpg"), ("PPM", "pgm")):
        for i in range(PER_FORMAT):
            name = f"{ext}{i:03d}"
            os.makedirs(root / "fuzz" / name)
            relative = f"fuzz/{name}/image.{ext}"
            (root / relative).write_bytes(mutate(_encode(rng.choice(sources), fmt), rng))
            fuzzed.append(relative)
            rows.append((relative, good[i % len(good)], 0))
    with open(root / "pairs.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["left", "right", "label", "split"])
        writer.writerows([[*r, "train"] for r in rows])
    assert len(fuzzed) >= 500

    data = DataConfig(image_root=str(root), manifest="pairs.csv", max_quarantined=len(rows),
                      max_image_pixels=1_000_000)
    examples = standard_artifacts.Examples()
    examples.uri = str(tmp_path / "out" / "examples")
    report = QuarantineReport()
    report.uri = str(tmp_path / "out" / "quarantine")
    os.makedirs(report.uri)
    executor_lib.Executor().Do(
        {}, {executor_lib.EXAMPLES_KEY: [examples], executor_lib.QUARANTINE_KEY: [report]},
        {executor_lib.INPUT_BASE_KEY: str(root),
         executor_lib.DATA_CONFIG_KEY: json.dumps(data.__dict__)})

    as_example = []
    for record in tf.data.TFRecordDataset(
            tf.io.gfile.glob(os.path.join(examples.uri, "Split-*", "*.gz")),
            compression_type="GZIP"):
        feature = tf.train.Example.FromString(record.numpy()).features.feature
        as_example.append(feature["left_class"].bytes_list.value[0].decode())
        assert feature["left_image"].bytes_list.value[0].startswith(b"\x89PNG")
    quarantined = list(csv.DictReader(open(os.path.join(report.uri, "quarantine.csv"))))
    quarantined_files = [rows[int(q["row"]) - 2][0] for q in quarantined]
    example_files = [f"{c}/image.{c.split('/')[1][:3]}" for c in as_example]
    assert len(set(example_files)) == len(example_files)
    assert len(set(quarantined_files)) == len(quarantined_files)
    assert not set(example_files) & set(quarantined_files)
    assert sorted(example_files + quarantined_files) == sorted(fuzzed)
    summary = json.load(open(os.path.join(report.uri, "summary.json")))
    assert summary["inputs"] == len(fuzzed) == summary["pairs"]["train"] + summary["quarantined"]
    reasons = collections.Counter(
        "above the pixel limit" if "above the limit" in q["reason"]
        else ": ".join(q["reason"].split("': ", 1)[1].split(": ")[:2]) for q in quarantined)
    print(json.dumps({"files": len(fuzzed), "examples": len(example_files),
                      "quarantined": len(quarantined_files), "reasons": reasons}, indent=1))
