"""`oneshot` on a tiny hand-made run in Lake et al.'s format gives the known answer; the run
builder and `evaluate` write what they say."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from siamese_tfx.pipeline import quality
from siamese_tfx.pipeline.cli import main

SIZE = 12


class PixelDistanceModel(tf.Module):
    """A stand-in exported model: distance = mean absolute pixel difference, threshold 0.1."""

    def __init__(self):
        super().__init__()
        self.match_threshold = tf.Variable(0.1, trainable=False)

    def _decode(self, images):
        return tf.map_fn(
            lambda b: tf.cast(tf.io.decode_png(b, channels=1), tf.float32) / 255.0, images,
            fn_output_signature=tf.TensorSpec([SIZE, SIZE, 1], tf.float32))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string),
                                  tf.TensorSpec([None], tf.string)])
    def compare(self, left_image, right_image):
        distance = tf.reduce_mean(tf.abs(self._decode(left_image) - self._decode(right_image)),
                                  axis=[1, 2, 3])
        match = distance <= self.match_threshold
        return {"distance": distance, "similarity": tf.where(match, 0.75, 0.25), "match": match}


@pytest.fixture(scope="module")
def pixel_model(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("pixel_model"))
    module = PixelDistanceModel()
    tf.saved_model.save(module, path, signatures={"compare": module.compare})
    return path


def _glyph(level: int, noise_seed=None) -> Image.Image:
    pixels = np.full((SIZE, SIZE), level, np.float32)
    if noise_seed is not None:
        pixels += np.random.default_rng(noise_seed).integers(-10, 10, (SIZE, SIZE))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _hand_made_run(root: str, wrong_label: bool = False) -> str:
    """Three classes: grey levels 0, 120 and 250; each query is a noisy copy of one exemplar.
    item01 -> class03, item02 -> class01, item03 -> class02."""
    run = os.path.join(root, "run01")
    os.makedirs(os.path.join(run, "training"))
    os.makedirs(os.path.join(run, "test"))
    for c, level in enumerate((0, 120, 250), start=1):
        _glyph(level).save(os.path.join(run, "training", f"class{c:02d}.png"))
    for item, level in ((1, 250), (2, 0), (3, 120)):
        _glyph(level, noise_seed=item).save(os.path.join(run, "test", f"item{item:02d}.png"))
    labels = ["run01/test/item01.png run01/training/class03.png",  # Lake's own prefix
              "test/item02.png training/class01.png",
              "test/item03.png training/class0%d.png" % (1 if wrong_label else 2)]
    with open(os.path.join(run, "class_labels.txt"), "w") as f:
        f.write("\n".join(labels) + "\n")
    return run


def test_oneshot_gives_the_known_answer(pixel_model, tmp_path):
    run = _hand_made_run(str(tmp_path / "runs"))
    result = quality.oneshot_run(quality.load_model(pixel_model), run)
    assert result.predicted == ["training/class03.png", "training/class01.png",
                                "training/class02.png"]
    assert result.accuracy == 1.0


def test_oneshot_command_prints_per_run_and_overall_accuracy(pixel_model, tmp_path, capsys):
    _hand_made_run(str(tmp_path / "runs"), wrong_label=True)
    out = str(tmp_path / "report")
    assert main(["oneshot", "--model", pixel_model, "--runs", str(tmp_path / "runs"),
                 "--output-dir", out]) == 0
    printed = capsys.readouterr().out
    assert "run01: 0.6667 (2/3)" in printed
    assert "overall 3-way one-shot accuracy over 1 run(s): 0.6667" in printed
    assert json.load(open(os.path.join(out, "oneshot.json")))["accuracy"] == pytest.approx(2 / 3)
    with Image.open(os.path.join(out, "oneshot_examples.png")) as image:
        assert image.size[0] > 100


def _omniglot_like(root: str) -> str:
    """Two alphabets (A: 4 characters, B: 2), 3 drawers each; pixel level = character id."""
    for alphabet, count in (("A", 4), ("B", 2)):
        for c in range(count):
            folder = os.path.join(root, alphabet, f"character{c:02d}")
            os.makedirs(folder)
            level = 40 * c + (0 if alphabet == "A" else 200)
            for drawer in range(3):
                _glyph(level, noise_seed=drawer).save(
                    os.path.join(folder, f"{c:02d}_{drawer + 1:02d}.png"))
    return root


def test_built_runs_draw_from_one_alphabet_and_two_drawers(pixel_model, tmp_path):
    root = _omniglot_like(str(tmp_path / "chars"))
    runs = quality.make_lake_runs(root, str(tmp_path / "runs"), num_runs=3, way=4, seed=1)
    assert [os.path.basename(r) for r in runs] == ["run01", "run02", "run03"]
    for run in runs:
        source = open(os.path.join(run, "source.txt")).read()
        assert source.startswith("alphabet A;")  # B has too few characters for 4-way.
        exemplars, answers = quality.read_run(run)
        assert len(exemplars) == 4 and len(answers) == 4
        assert sorted(answers.values()) == exemplars
        for query, exemplar in answers.items():  # Another drawer of the same character.
            q = np.asarray(Image.open(os.path.join(run, query)), np.float32)
            e = np.asarray(Image.open(os.path.join(run, exemplar)), np.float32)
            assert 0 < np.abs(q - e).mean() < 15
    summary = quality.oneshot(pixel_model, str(tmp_path / "runs"))
    assert summary["accuracy"] == 1.0 and summary["way"] == 4


def test_evaluate_command_writes_metrics_and_figures(pixel_model, tmp_path, capsys):
    root = _omniglot_like(str(tmp_path / "chars"))
    out = str(tmp_path / "eval")
    assert main(["evaluate", "--model", pixel_model, "--pairs", root, "--class-depth", "2",
                 "--num-pairs", "20", "--output-dir", out]) == 0
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    assert metrics["pairs"] == 20 and metrics["threshold"] == pytest.approx(0.1)
    assert metrics["auc"] == 1.0 and metrics["accuracy"] == 1.0
    for name in ("roc.png", "distance_histogram.png"):
        with Image.open(os.path.join(out, name)) as image:
            assert image.size == (640, 420)
    assert "auc" in capsys.readouterr().out


def test_evaluate_reads_a_manifest(pixel_model, tmp_path):
    root = _omniglot_like(str(tmp_path / "chars"))
    manifest = os.path.join(root, "pairs.csv")
    with open(manifest, "w") as f:
        f.write("left,right,label\n"
                "A/character00/00_01.png,A/character00/00_02.png,1\n"
                "A/character00/00_01.png,A/character03/03_01.png,0\n")
    lefts, rights, labels = quality.load_pairs(manifest)
    metrics = quality.evaluate(pixel_model, lefts, rights, labels)
    assert metrics["accuracy"] == 1.0 and list(labels) == [1, 0]
