"""Bad inputs on the whole pipeline (LocalDagRunner, real components): each one is quarantined
with its file, row and reason; the default limit stops the run before Transform naming the
report; a looser limit trains on the good rows, and the pair counts add up."""

import csv
import json
import os
import random
import struct
import zlib

import pytest
import tensorflow as tf
from PIL import Image, ImageDraw

from siamese_tfx.components.contract.config import (DataConfig, EvalConfig, ImageConfig,
                                                    ModelConfig, TrainConfig)
from siamese_tfx.pipeline import local_runner
from siamese_tfx.pipeline import pipeline as pipeline_lib
from siamese_tfx.pipeline.config import PipelineConfig

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TRAIN_CLASSES, EVAL_CLASSES = range(6), range(6, 8)


def _drawing(path: str, seed: int) -> None:
    rng = random.Random(seed)
    image = Image.new("L", (16, 16), color=255)
    draw = ImageDraw.Draw(image)
    for _ in range(3):
        draw.line([(rng.randrange(16), rng.randrange(16)) for _ in range(2)], fill=0, width=2)
    image.save(path, format="PNG")


def bomb_png(width: int = 20000, height: int = 20000) -> bytes:
    """A valid ~100-byte PNG whose header claims width x height pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


# (row, what the quarantine reason must say), for each bad input.
BAD_ROWS = [
    (("c0/truncated.png", "c0/0.png", 1), "cannot decode image: OSError: image file is truncated"),
    (("c1/text.png", "c1/0.png", 1), "cannot decode image: not a PNG, JPEG"),
    (("c2/bomb.png", "c2/0.png", 1), "400000000 pixels"),
    (("c3/missing.png", "c3/0.png", 1), "does not exist"),
    (("../../etc/passwd", "c4/0.png", 1), "leaves the image root"),
    (("c4/1.png", "c4/2.png", 2), "label must be 0 or 1, got '2'"),
    (("c5/1.png", "c5/0.png", 1), "duplicate of the pair on line"),
    (("c5/0.png", "./c5/0.png", 1), "left and right are the same file 'c5/0.png'"),
    # A row with a field more than the header (here: a split and a stray value).
    (("c5/2.png", "c4/1.png", 0, "train", "stray"), "5 fields, but the header names 4"),
]


def _good_rows() -> list[tuple[str, str, int, str]]:
    rows = []
    for c in TRAIN_CLASSES:
        n = (c + 1) % len(TRAIN_CLASSES)
        rows += [(f"c{c}/0.png", f"c{c}/1.png", 1, "train"),
                 (f"c{c}/0.png", f"c{c}/2.png", 1, "train"),
                 (f"c{c}/0.png", f"c{n}/1.png", 0, "train"),
                 (f"c{c}/2.png", f"c{n}/0.png", 0, "train")]
    rows += [("c6/0.png", "c6/1.png", 1, "eval"), ("c6/0.png", "c6/2.png", 1, "eval"),
             ("c7/0.png", "c7/1.png", 1, "eval"), ("c7/0.png", "c7/2.png", 1, "eval"),
             ("c6/0.png", "c7/1.png", 0, "eval"), ("c6/2.png", "c7/0.png", 0, "eval"),
             ("c6/1.png", "c7/2.png", 0, "eval"), ("c7/1.png", "c6/2.png", 0, "eval")]
    return rows


@pytest.fixture(scope="module")
def bad_dataset(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("bad_inputs") / "images"
    for c in [*TRAIN_CLASSES, *EVAL_CLASSES]:
        os.makedirs(root / f"c{c}")
        for i in range(3):
            _drawing(str(root / f"c{c}" / f"{i}.png"), seed=10 * c + i)
    whole = (root / "c0" / "0.png").read_bytes()
    (root / "c0" / "truncated.png").write_bytes(whole[: len(whole) // 2])
    (root / "c1" / "text.png").write_text("These are notes, not an image.\n")
    (root / "c2" / "bomb.png").write_bytes(bomb_png())
    with open(root / "pairs.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["left", "right", "label", "split"])
        writer.writerows(_good_rows())
        writer.writerows([[*row, "train"] if len(row) == 3 else row for row, _ in BAD_ROWS])
    return str(root)


def _config(image_root: str, workdir, max_quarantined: int) -> PipelineConfig:
    return PipelineConfig(
        pipeline_root=str(workdir / "root"),
        serving_dir=str(workdir / "serving"),
        pipeline_name="quarantine-e2e",
        model_name="pairs",
        data=DataConfig(image_root=image_root, manifest="pairs.csv",
                        max_quarantined=max_quarantined),
        image=ImageConfig(height=16, width=16, channels=1),
        model=ModelConfig(embedding_dim=8),
        train=TrainConfig(train_steps=2, batch_size=4, calibration_steps=1),
        eval=EvalConfig.record_only(),
    )


def _run(config: PipelineConfig, workdir):
    return local_runner.run(config, str(workdir / "metadata.sqlite"), progress=None,
                            log_path=str(workdir / "tfx.log"))


def _check_report(rows: list[dict[str, str]], image_root: str) -> None:
    assert len(rows) == len(BAD_ROWS), rows
    by_item = {r["item"].split(",")[0]: r for r in rows}
    for (left, *_), reason in BAD_ROWS:
        row = by_item[left]
        assert reason in row["reason"], (left, row)
        assert int(row["row"]) >= 2  # The manifest line (1 is the header).
        if left.endswith(("truncated.png", "text.png", "bomb.png")):
            assert row["source"] == os.path.join(image_root, left)  # The bad image itself.
        else:
            assert row["source"] == os.path.join(image_root, "pairs.csv")


def test_default_limit_stops_before_transform_naming_the_report(bad_dataset, tmp_path):
    with pytest.raises(Exception) as err:
        _run(_config(bad_dataset, tmp_path, max_quarantined=0), tmp_path)
    message = str(err.value)
    assert f"{len(BAD_ROWS)} input(s) quarantined, more than the limit of 0" in message, message
    print(f"{type(err.value).__name__}: {message}")
    report = message.split("Full report: ")[1].split("\n")[0]
    assert os.path.exists(report), report
    _check_report(list(csv.DictReader(open(report))), bad_dataset)
    from siamese_tfx.pipeline import summary as summary_lib

    summary = summary_lib.summarize(
        local_runner.metadata_config(str(tmp_path / "metadata.sqlite")), "quarantine-e2e")
    states = {c.component: c.state for c in summary.components}
    assert states[pipeline_lib.EXAMPLE_GEN] == "FAILED"
    assert pipeline_lib.TRANSFORM not in states and pipeline_lib.TRAINER not in states


def test_looser_limit_trains_on_the_good_rows_and_counts_add_up(bad_dataset, tmp_path):
    summary = _run(_config(bad_dataset, tmp_path, max_quarantined=len(BAD_ROWS)), tmp_path)
    states = {c.component: c.state for c in summary.components}
    assert all(s == "COMPLETE" for s in states.values()), states
    assert summary.quarantined == len(BAD_ROWS)
    assert summary.pushed_path and not summary.anomalies
    report_dir = [u for u in summary.artifacts[pipeline_lib.EXAMPLE_GEN] if "quarantine" in u][0]
    _check_report(list(csv.DictReader(open(os.path.join(report_dir, "quarantine.csv")))),
                  bad_dataset)
    counts = json.load(open(os.path.join(report_dir, "summary.json")))
    examples_dir = [u for u in summary.artifacts[pipeline_lib.EXAMPLE_GEN] if "examples" in u][0]
    written = {
        split: sum(1 for _ in tf.data.TFRecordDataset(
            tf.io.gfile.glob(os.path.join(examples_dir, f"Split-{split}", "*.gz")),
            compression_type="GZIP"))
        for split in ("train", "eval")
    }
    good = _good_rows()
    assert written == {"train": 24, "eval": 8} == counts["pairs"]
    assert sum(written.values()) == len(good)
    assert sum(written.values()) + counts["quarantined"] == counts["inputs"] == (
        len(good) + len(BAD_ROWS))
    print(json.dumps(counts))
