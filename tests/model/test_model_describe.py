"""The network describes itself (components/trainer/describe.py, `siamese-tfx describe`): parameter
counts of the backbone, the head and the whole network, and whether both branches use the same
variables, read from the model's variables; Keras's diagrams; and what is written when Graphviz's
`dot` is missing."""

import json
import os
import subprocess
import sys

import model_fixtures as fx
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
from PIL import Image

from siamese_tfx.components.contract import features, signatures
from siamese_tfx.components.contract.config import ImageConfig, ModelConfig, ServingLimitsConfig
from siamese_tfx.components.trainer import describe, export, heads
from siamese_tfx.components.trainer import model as model_lib
from siamese_tfx.pipeline import cli

IMAGE = ImageConfig(height=16, width=16, channels=1)
DIM = 8
LEFT, RIGHT = (features.transformed_name(k) for k in features.IMAGE_KEYS)


def _network(shared: bool, head: str = "euclidean", backbone: str = "conv4", seed: int = 0):
    tf.keras.utils.set_random_seed(seed)
    loss = "contrastive" if head == "euclidean" else "binary_crossentropy"
    model_cfg = ModelConfig(backbone=backbone, embedding_dim=DIM, head=head, loss=loss,
                            shared_weights=shared)
    return model_lib.build_siamese(IMAGE, model_cfg)


@pytest.fixture(scope="module")
def transform_graph(tmp_path_factory) -> tft.TFTransformOutput:
    out = str(tmp_path_factory.mktemp("transform"))
    fx.write_transform_graph(out, IMAGE)
    return tft.TFTransformOutput(out)


def _export(siamese, backbone, transform_graph, path, threshold=0.625, head="euclidean") -> str:
    export.export_model(siamese, backbone, transform_graph, threshold, 1.0, str(path), IMAGE, "m",
                        heads.distance_scale(head, 1.0))
    return str(path)


@pytest.mark.parametrize("head", ["euclidean", "l1_sigmoid"])
@pytest.mark.parametrize("backbone", ["conv4", "small_conv"])
def test_pseudo_siamese_network_holds_exactly_one_backbone_more(backbone, head):
    siamese, siamese_backbone = _network(True, head, backbone)
    pseudo, pseudo_backbone = _network(False, head, backbone)
    shared = describe.describe_network(siamese)
    unshared = describe.describe_network(pseudo)

    # The backbone is the same network in both; Keras's own counts agree with describe's.
    assert shared.backbone.total == siamese_backbone.count_params() > 0
    assert unshared.backbone == shared.backbone
    assert shared.backbone.non_trainable == sum(
        int(np.prod(w.shape)) for w in siamese_backbone.non_trainable_weights)
    assert shared.whole.total == siamese.count_params()
    assert unshared.whole.total == pseudo.count_params()
    assert shared.head_counts == unshared.head_counts
    assert shared.head_counts.total == (DIM + 1 if head == "l1_sigmoid" else 0)  # Dense(1)
    assert shared.whole.total == shared.backbone.total + shared.head_counts.total
    # The pseudo-Siamese network has exactly the backbone's parameters more.
    assert unshared.whole.total - shared.whole.total == shared.backbone.total
    assert unshared.whole.trainable - shared.whole.trainable == shared.backbone.trainable
    assert unshared.whole.non_trainable - shared.whole.non_trainable == (
        shared.backbone.non_trainable)

    assert shared.shares_weights and not unshared.shares_weights
    variables = len(siamese_backbone.weights)
    assert [b.variables for b in shared.branches] == [variables, variables]
    assert shared.shared_variables == variables and unshared.shared_variables == 0
    assert shared.sharing_sentence() == (
        f"Both branches use the same {variables} variables ({backbone}): the weights are "
        f"shared, so the network holds the backbone's {shared.backbone.total:,} parameters "
        "once.")
    assert unshared.sharing_sentence().startswith(
        f"The branches use different variables ({backbone}_left: {variables}, "
        f"{backbone}_right: {variables}; none in common): the weights are NOT shared")
    assert shared.sharing_sentence() in shared.summary_line()
    assert unshared.sharing_sentence() in unshared.summary_line()
    assert shared.embedding_size == unshared.embedding_size == DIM
    assert pseudo_backbone.name == f"{backbone}_left"


def test_sharing_is_read_from_the_variables_not_from_the_config():
    """Two branches built from separate layer objects that share one Dense layer: the
    description finds the one shared variable pair, whatever the config says."""
    keras = tf.keras
    shared_dense = keras.layers.Dense(4, name="shared_dense")
    inputs = [keras.Input((3,), name=LEFT), keras.Input((3,), name=RIGHT)]
    towers = [shared_dense(keras.layers.Dense(3, name=f"own_{i}")(x))
              for i, x in enumerate(inputs)]
    distance = heads.build_head("euclidean", "distance")(towers)
    description = describe.describe_network(keras.Model(inputs, distance, name="odd"))
    assert description.shared_variables == 2  # shared_dense's kernel and bias
    assert [b.variables for b in description.branches] == [4, 4]
    assert not description.shares_weights
    assert "only 2 of their variables in common" in description.sharing_sentence()
    # Each branch counts its own layer and the shared one; the whole network counts it once.
    assert description.backbone.total == 3 * 3 + 3 + 3 * 4 + 4
    assert description.whole.total == 2 * (3 * 3 + 3) + 3 * 4 + 4


def test_ensemble_lists_each_members_backbone_and_draws_each(tmp_path):
    model_cfg = ModelConfig(backbone="conv4", embedding_dim=DIM, ensemble_members=2)
    members = []
    for index in range(2):
        tf.keras.utils.set_random_seed(index)
        members.append(model_lib.build_siamese(IMAGE, model_cfg,
                                               backbone_name=f"conv4_member_{index}")[1])
    siamese, backbone = model_lib.build_ensemble(IMAGE, model_cfg, members)
    member_dirs = [str(tmp_path / f"member_{i}") for i in range(2)]
    description = describe.write_description(siamese, str(tmp_path), member_dirs)

    assert [m.name for m in description.members] == ["conv4_member_0", "conv4_member_1"]
    assert all(m.counts.total == members[0].count_params() for m in description.members)
    assert description.members_distinct
    assert description.backbone.total == backbone.count_params() == 2 * members[0].count_params()
    assert description.shares_weights and description.embedding_size == 2 * DIM
    assert description.diagram == {"written": ["model.png", "backbone.png",
                                               "member_0/backbone.png", "member_1/backbone.png"],
                                   "skipped": ""}
    for directory in member_dirs:
        assert Image.open(os.path.join(directory, "backbone.png")).size[1] > 200
    text = open(tmp_path / describe.SUMMARY_TXT).read()
    assert "Ensemble: 2 members' backbones, each holding its own variables:" in text
    assert f"conv4_member_1: {members[1].count_params():,} parameters" in text


def test_trainer_output_holds_the_summary_the_diagrams_and_a_summary_line(tmp_path,
                                                                         transform_graph):
    siamese, backbone = _network(True)
    # Described after the export, as run_fn does: the Transform layer, the threshold and the
    # serving limits the exporter attaches to the model are neither counted nor drawn.
    _export(siamese, backbone, transform_graph, tmp_path / "model")
    assert siamese.count_params() == backbone.count_params() + 1 + len(signatures.LIMIT_ATTRS)
    run_dir = str(tmp_path / "model_run")
    description = describe.write_description(siamese, run_dir)

    assert description.whole.total == backbone.count_params()
    model_png, backbone_png = (Image.open(os.path.join(run_dir, name))
                               for name in (describe.MODEL_PNG, describe.BACKBONE_PNG))
    # The network's diagram holds the expanded backbone plus the inputs and the head.
    assert model_png.format == "PNG" and model_png.size[1] > backbone_png.size[1] > 400
    text = open(os.path.join(run_dir, describe.SUMMARY_TXT)).read()
    for expected in ("backbone conv4 (both branches)", f"{backbone.count_params():,}",
                     description.sharing_sentence(), f"Embedding size: {DIM}",
                     "Diagrams: model.png, backbone.png", "Keras summary of 'siamese'",
                     "Keras summary of the backbone 'conv4'"):
        assert expected in text, expected
    assert "transform_features_layer" not in text
    stored = json.load(open(os.path.join(run_dir, describe.SUMMARY_JSON)))
    assert stored["shares_weights"] is True and stored["sharing"] == (
        description.sharing_sentence())
    assert describe.read_description(run_dir) == description
    assert describe.summary_line(run_dir) == description.summary_line()
    assert "Diagram skipped" not in description.summary_line()
    assert describe.summary_line(str(tmp_path / "model")) is None  # no description there


def test_without_dot_the_diagrams_are_skipped_and_the_summary_is_still_written(
        tmp_path, monkeypatch, path_without_dot):
    monkeypatch.setenv("PATH", path_without_dot)
    siamese, _ = _network(True)
    description = describe.write_description(siamese, str(tmp_path))

    assert not any(name.endswith(".png") for name in os.listdir(tmp_path))
    assert description.diagram["written"] == []
    assert "Graphviz's dot is not on PATH" in description.diagram["skipped"]
    assert "Diagram skipped: Graphviz's dot is not on PATH" in description.summary_line()
    text = open(tmp_path / describe.SUMMARY_TXT).read()
    assert description.sharing_sentence() in text and "Diagram skipped" in text
    assert "Diagram skipped" in describe.summary_line(str(tmp_path))


def _describe(argv, capfd) -> tuple[int, str, str]:
    code = cli.main(["describe", *argv])
    captured = capfd.readouterr()
    return code, captured.out, captured.err


def test_describe_reads_the_exported_model_and_tells_siamese_from_pseudo_siamese(
        tmp_path, transform_graph, capfd):
    siamese, backbone = _network(True, seed=1)
    pseudo, pseudo_backbone = _network(False, seed=1)
    counts = {"siamese": describe.describe_network(siamese),
              "pseudo": describe.describe_network(pseudo)}
    paths = {"siamese": _export(siamese, backbone, transform_graph, tmp_path / "s" / "1", 0.625),
             "pseudo": _export(pseudo, pseudo_backbone, transform_graph, tmp_path / "p" / "3",
                               0.25)}
    for kind, threshold in (("siamese", "0.625"), ("pseudo", "0.25")):
        # A model folder of numbered versions resolves to its newest version.
        code, out, _ = _describe(["--model", os.path.dirname(paths[kind])], capfd)
        assert code == 0
        assert f"SavedModel: {paths[kind]}" in out
        assert f"Match threshold: {threshold} (match: distance <= threshold)" in out
        assert "  compare(left_image: string[?], right_image: string[?]) -> distance: " \
               "float32[?], match: bool[?], similarity: float32[?]" in out
        assert f"  embed(image: string[?]) -> embedding: float32[?, {DIM}]" in out
        assert "  serving_default(examples: string[?]) -> distance: float32[?]" in out
        assert f"Embedding size: {DIM}" in out
        limits = ServingLimitsConfig()
        assert ("values stored in the model (pixel and batch limits, when it has them): "
                f"max_batch_size = {limits.serving_max_batch_size}, "
                f"max_image_bytes = {limits.serving_max_image_bytes}, "
                f"max_image_pixels = {limits.serving_max_image_pixels}") in out
        # The reloaded network's counts and sharing are the built network's.
        for line in counts[kind].table():
            assert line in out
        assert counts[kind].sharing_sentence() in out
    assert counts["pseudo"].sharing_sentence() != counts["siamese"].sharing_sentence()


def test_describe_draws_the_diagram_or_says_why_not(tmp_path, transform_graph, capfd,
                                                    monkeypatch, path_without_dot):
    siamese, backbone = _network(False)
    path = _export(siamese, backbone, transform_graph, tmp_path / "model")
    diagram = str(tmp_path / "out.png")
    code, out, _ = _describe(["--model", path, "--diagram", diagram], capfd)
    assert code == 0 and f"Diagram: {diagram}" in out
    assert Image.open(diagram).size[0] > 400  # two backbones side by side

    monkeypatch.setenv("PATH", path_without_dot)
    os.remove(diagram)
    code, out, err = _describe(["--model", path, "--diagram", diagram], capfd)
    assert code == 1 and not os.path.exists(diagram)
    assert "diagram skipped: Graphviz's dot is not on PATH" in err
    assert "the weights are NOT shared" in out  # the rest is still printed


def test_describe_of_a_model_without_a_keras_network_and_of_no_model(tmp_path, capfd):
    class Plain(tf.Module):
        def __init__(self):
            super().__init__()
            self.match_threshold = tf.Variable(0.5, trainable=False)
            self.max_batch = tf.Variable(64.0, trainable=False)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def embed(self, image):
            return {"embedding": tf.zeros([tf.shape(image)[0], 3])}

    module = Plain()
    tf.saved_model.save(module, str(tmp_path / "plain"), signatures={"embed": module.embed})
    code, out, _ = _describe(["--model", str(tmp_path / "plain")], capfd)
    assert code == 0
    assert "Match threshold: 0.5" in out and "max_batch = 64" in out
    assert "Parameter counts: not available:" in out and "no Keras model in this SavedModel" in out

    code, out, err = _describe(["--model", str(tmp_path / "missing")], capfd)
    assert code == 2 and out == "" and "--model" in err and "no such folder" in err
    os.makedirs(tmp_path / "empty")
    code, _, err = _describe(["--model", str(tmp_path / "empty")], capfd)
    assert code == 2 and "not a SavedModel folder" in err


def test_describe_runs_as_the_installed_command(tmp_path, transform_graph):
    """The real entry point in a fresh process, as a user runs it on a pushed version."""
    siamese, backbone = _network(True)
    path = _export(siamese, backbone, transform_graph, tmp_path / "serving" / "m" / "7")
    command = os.path.join(os.path.dirname(sys.executable), "siamese-tfx")
    result = subprocess.run([command, "describe", "--model", path], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    for signature in ("compare", "embed", "serving_default"):
        assert f"\n  {signature}(" in result.stdout
    assert "Match threshold: 0.625" in result.stdout
    assert "backbone conv4 (both branches)" in result.stdout
    assert "Both branches use the same" in result.stdout
    assert "Traceback" not in result.stderr
