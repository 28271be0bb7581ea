"""The whole pipeline on LocalDagRunner with real TFX components, real Beam and SQLite ML
Metadata, on a few real Omniglot characters and a few training steps."""

import dataclasses
import glob
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

from siamese_tfx.components.contract import features, signatures
from siamese_tfx.components.contract.config import (DataConfig, EvalConfig, GalleryConfig,
                                                    ImageConfig, ModelConfig, TrainConfig)
from siamese_tfx.pipeline import local_runner
from siamese_tfx.pipeline import pipeline as pipeline_lib
from siamese_tfx.pipeline.config import PipelineConfig

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

EMBEDDING_DIM = 16


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("pipeline")


def _config(root: str, workdir, **eval_overrides) -> PipelineConfig:
    return PipelineConfig(
        pipeline_root=str(workdir / "root"),
        serving_dir=str(workdir / "serving"),
        pipeline_name="siamese-e2e",
        model_name="omniglot",
        data=DataConfig(image_root=root, class_depth=2, num_train_pairs=48, num_eval_pairs=24,
                        eval_class_fraction=0.25, seed=1),
        image=ImageConfig(height=28, width=28, channels=1),
        model=ModelConfig(embedding_dim=EMBEDDING_DIM, margin=1.0),
        train=TrainConfig(train_steps=4, batch_size=8, calibration_steps=2),
        eval=dataclasses.replace(EvalConfig.record_only(), **eval_overrides),
    )


def _run(config, workdir):
    return local_runner.run(config, str(workdir / "metadata.sqlite"), progress=None,
                            log_path=str(workdir / "tfx.log"))


def _states(summary):
    return {c.component: c.state for c in summary.components}


@pytest.fixture(scope="module")
def first_run(omniglot_tiny, workdir):
    return _run(_config(omniglot_tiny, workdir), workdir)


def test_every_component_ran_and_recorded_its_artifacts(first_run, workdir):
    assert set(_states(first_run)) == (set(pipeline_lib.COMPONENT_ORDER)
                                       - set(pipeline_lib.OPTIONAL_COMPONENTS))
    assert all(s == "COMPLETE" for s in _states(first_run).values()), _states(first_run)
    store = metadata_store.MetadataStore(
        local_runner.metadata_config(str(workdir / "metadata.sqlite")))
    types = {t.name for t in store.get_artifact_types()}
    for expected in ("Examples", "siamese_tfx.QuarantineReport", "ExampleStatistics", "Schema",
                     "ExampleAnomalies", "TransformGraph", "Model", "ModelRun",
                     "ModelEvaluation", "ModelBlessing", "InfraBlessing", "PushedModel"):
        assert expected in types
        artifacts = store.get_artifacts_by_type(expected)
        assert artifacts and all(a.state == metadata_store_pb2.Artifact.LIVE for a in artifacts)
    for component, uris in first_run.artifacts.items():
        if component != pipeline_lib.MODEL_RESOLVER:
            assert uris and all(os.path.exists(u) for u in uris), component
    assert first_run.quarantined == 0
    assert first_run.blessed is True
    assert {"binary_accuracy", "auc", "example_count"} <= set(first_run.metrics)
    assert first_run.metrics["example_count"] == 24


def test_pushed_model_is_in_serving_layout_and_answers(first_run, omniglot_tiny, workdir):
    pushed = first_run.pushed_path
    assert pushed and os.path.dirname(pushed) == str(workdir / "serving" / "omniglot")
    assert os.path.basename(pushed).isdigit()
    assert os.path.exists(os.path.join(pushed, "saved_model.pb"))
    loaded = tf.saved_model.load(pushed)
    assert set(loaded.signatures) == {signatures.SERVING_DEFAULT,
                                      signatures.COMPARE, signatures.EMBED}
    images = []
    for alphabet in sorted(os.listdir(omniglot_tiny))[:1]:
        for character in sorted(os.listdir(os.path.join(omniglot_tiny, alphabet)))[:2]:
            folder = os.path.join(omniglot_tiny, alphabet, character)
            for name in sorted(os.listdir(folder))[:2]:
                images.append(open(os.path.join(folder, name), "rb").read())
    out = loaded.signatures[signatures.COMPARE](
        left_image=tf.constant(images[:2]), right_image=tf.constant(images[2:]))
    distance = out[signatures.DISTANCE].numpy()
    assert distance.shape == (2,) and (distance >= 0).all()
    similarity = out[signatures.SIMILARITY].numpy()
    assert ((similarity >= 0) & (similarity <= 1)).all()
    np.testing.assert_array_equal(out[signatures.MATCH].numpy(), similarity >= 0.5)
    embedding = loaded.signatures[signatures.EMBED](image=tf.constant(images))
    embedding = embedding[signatures.EMBEDDING].numpy()
    assert embedding.shape == (4, EMBEDDING_DIM)
    np.testing.assert_allclose(np.linalg.norm(embedding[0] - embedding[2]), distance[0],
                               rtol=1e-4, atol=1e-5)
    example = tf.train.Example(features=tf.train.Features(feature={
        k: tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))
        for k, v in ((features.LEFT_IMAGE, images[0]), (features.RIGHT_IMAGE, images[2]))}))
    by_example = loaded.signatures[signatures.SERVING_DEFAULT](
        examples=tf.constant([example.SerializeToString()]))
    np.testing.assert_allclose(by_example[signatures.DISTANCE].numpy()[0], distance[0], rtol=1e-5)


def _trainer_file(summary, name):
    (path,) = [p for uri in summary.artifacts[pipeline_lib.TRAINER]
               for p in glob.glob(os.path.join(uri, "**", name), recursive=True)]
    return path


def test_trainer_describes_the_network_and_the_summary_says_it_shares_one_backbone(first_run):
    from siamese_tfx.components.trainer import describe

    run_dir = os.path.dirname(_trainer_file(first_run, describe.SUMMARY_TXT))
    for name in (describe.MODEL_PNG, describe.BACKBONE_PNG, describe.SUMMARY_JSON):
        assert os.path.getsize(os.path.join(run_dir, name)) > 0, name
    description = describe.read_description(run_dir)
    assert description.shares_weights and description.head_counts.total == 0
    assert description.whole == description.backbone and description.embedding_size == EMBEDDING_DIM
    text = first_run.format()
    assert description.summary_line() in text.splitlines()
    assert "Both branches use the same" in text and "Diagram skipped" not in text


TOP_K = 3


@pytest.fixture(scope="module")
def gallery_run(first_run, omniglot_tiny, workdir):
    """The first run's config plus a gallery: the 8 characters' own images (class depth 2).
    Everything up to the Trainer is unchanged, so it comes from the cache."""
    config = dataclasses.replace(_config(omniglot_tiny, workdir), gallery=GalleryConfig(
        gallery_path=omniglot_tiny, gallery_class_depth=2, gallery_top_k=TOP_K))
    return _run(config, workdir)


def test_unchanged_inputs_reuse_cached_outputs_and_a_gallery_adds_its_builder(
        first_run, gallery_run, omniglot_tiny):
    states = _states(gallery_run)
    for component in (pipeline_lib.EXAMPLE_GEN, pipeline_lib.STATISTICS_GEN,
                      pipeline_lib.SCHEMA_GEN, pipeline_lib.TRANSFORM, pipeline_lib.TRAINER):
        assert states[component] == "CACHED", states
    assert gallery_run.run_id != first_run.run_id
    assert set(states) == set(pipeline_lib.COMPONENT_ORDER)
    for component in (pipeline_lib.GALLERY_BUILDER, pipeline_lib.EVALUATOR,
                      pipeline_lib.INFRA_VALIDATOR, pipeline_lib.PUSHER):
        assert states[component] == "COMPLETE", states
    text = gallery_run.format()
    assert any(line.split()[:2] == [pipeline_lib.GALLERY_BUILDER, "COMPLETE"]
               for line in text.splitlines()), text
    assert f"Gallery: 8 identities from 80 exemplars (nearest) of {omniglot_tiny}" in text
    # InfraValidator sent identify (the warmup's two and its own) through the model server.
    assert gallery_run.infra_blessed is True and gallery_run.infra_checks == 10
    assert signatures.IDENTIFY in gallery_run.infra_signatures
    assert "identify" in text.split("Infra validation: passed")[1].splitlines()[0]


def test_the_pushed_gallery_model_identifies_its_own_exemplars(gallery_run, omniglot_tiny,
                                                               workdir):
    from siamese_tfx.components.trainer import gallery
    from siamese_tfx.serving.warmup import read_warmup_requests

    pushed = gallery_run.pushed_path
    assert pushed and os.path.dirname(pushed) == str(workdir / "serving" / "omniglot")
    loaded = tf.saved_model.load(pushed)
    assert set(loaded.signatures) == {signatures.SERVING_DEFAULT, signatures.COMPARE,
                                      signatures.EMBED, signatures.IDENTIFY}
    entries = gallery.read_gallery(omniglot_tiny, class_depth=2)
    images = [gallery.read_image(e.path) for e in entries]
    out = loaded.signatures[signatures.IDENTIFY](image=tf.constant(images))
    labels = out[signatures.LABELS].numpy().astype(str)
    assert labels.shape == (80, TOP_K)
    assert list(labels[:, 0]) == [e.label for e in entries]
    assert len(set(labels[:, 0])) == 8
    record = gallery.read_gallery_record(pushed)
    assert record["gallery_fingerprint"] == gallery.fingerprint(entries, images)
    assert (record["identities"], record["exemplars"], record["top_k"]) == (8, 80, TOP_K)
    warmup = read_warmup_requests(os.path.join(pushed, signatures.WARMUP_DIR,
                                               signatures.WARMUP_FILE))
    assert signatures.IDENTIFY in {log.predict_log.request.model_spec.signature_name
                                   for log in warmup}


def test_unreachable_thresholds_bless_nothing_and_push_nothing(first_run, omniglot_tiny,
                                                              workdir):
    before = sorted(os.listdir(workdir / "serving" / "omniglot"))
    failing = _run(_config(omniglot_tiny, workdir, min_accuracy=1.01), workdir)
    assert failing.blessed is False
    assert failing.pushed_path is None
    assert "not blessed" in failing.not_pushed_reason
    assert "binary_accuracy" in failing.not_pushed_reason
    assert sorted(os.listdir(workdir / "serving" / "omniglot")) == before


def test_model_that_cannot_answer_through_the_serving_stack_is_not_pushed(
        first_run, omniglot_tiny, workdir, monkeypatch):
    """The Trainer exports without the pair signature (`compare`): the model loads in-process
    and the Evaluator (which reads serving_default) blesses it, but InfraValidator's model server
    cannot load it, so Pusher pushes nothing and the summary says why."""
    from siamese_tfx.components.trainer import export

    make_signatures = export.make_serving_signatures

    def without_pair_signature(*args, **kwargs):
        exported = make_signatures(*args, **kwargs)
        del exported[signatures.COMPARE]
        return exported

    monkeypatch.setattr(export, "make_serving_signatures", without_pair_signature)
    before = sorted(os.listdir(workdir / "serving" / "omniglot"))
    # A Trainer setting of its own, so the Trainer runs again (with the patched export) while
    # everything before it comes from the cache.
    base = _config(omniglot_tiny, workdir)
    config = dataclasses.replace(base, train=dataclasses.replace(base.train, train_steps=3))
    broken = _run(config, workdir)
    states = _states(broken)
    assert states[pipeline_lib.TRANSFORM] == "CACHED", states
    assert states[pipeline_lib.TRAINER] == "COMPLETE"
    assert states[pipeline_lib.INFRA_VALIDATOR] == "COMPLETE"
    assert broken.blessed is True  # the Evaluator passed it
    assert broken.infra_blessed is False
    assert broken.pushed_path is None
    assert "infra validation failed" in broken.not_pushed_reason
    assert "could not load the model" in broken.not_pushed_reason
    assert "compare" in broken.not_pushed_reason
    assert "Infra validation: FAILED" in broken.format()
    assert sorted(os.listdir(workdir / "serving" / "omniglot")) == before
    assert first_run.infra_blessed is True and first_run.infra_checks == 7


def test_ensemble_trains_each_member_and_serves_their_joint_embedding(first_run, omniglot_tiny,
                                                                      workdir, monkeypatch,
                                                                      path_without_dot):
    """ensemble_members=2 through the whole pipeline: two members trained with their own seeds,
    directories and bags of training classes (triplet class batches), calibrated, blessed,
    infra-validated and pushed as ONE model whose embedding joins theirs. The data are the
    first run's, in its pipeline root: everything before the Trainer comes from the cache.
    On a machine without Graphviz (PATH without `dot`): the run succeeds and says the diagram
    was skipped."""
    from siamese_tfx.components.trainer import describe

    monkeypatch.setenv("PATH", path_without_dot)
    base = _config(omniglot_tiny, workdir)
    config = dataclasses.replace(
        base, model=dataclasses.replace(base.model, ensemble_members=2, loss="triplet",
                                        ensemble_class_fraction=0.67),
        train=dataclasses.replace(base.train, curve_every=2, classes_per_batch=2))
    summary = _run(config, workdir)
    states = _states(summary)
    assert states[pipeline_lib.TRANSFORM] == "CACHED", states
    assert all(states[c] == "COMPLETE" for c in (pipeline_lib.TRAINER, pipeline_lib.EVALUATOR,
                                                 pipeline_lib.INFRA_VALIDATOR,
                                                 pipeline_lib.PUSHER)), states
    assert summary.blessed is True and summary.infra_blessed is True and summary.pushed_path
    metrics_path = _trainer_file(summary, "training_metrics.json")
    metrics = json.load(open(metrics_path))
    assert metrics["ensemble_members"] == 2
    assert [m["seed"] for m in metrics["members"]] == [base.data.seed, base.data.seed + 1]
    assert all(0.0 <= m["eval_auc"] <= 1.0 for m in metrics["members"])
    # 6 of the 8 characters train (eval_class_fraction 0.25); the Trainer recovers them from
    # the 48 sampled pairs' positives (a character whose images those do not all link counts
    # as several), and each member draws two thirds of what it recovered.
    for member in metrics["members"]:
        assert member["train_split_classes"] >= 6
        assert member["train_classes"] == round(0.67 * member["train_split_classes"])
    run_dir = os.path.dirname(metrics_path)
    for index in range(2):
        member = os.path.join(run_dir, f"member_{index}")
        assert os.path.exists(os.path.join(member, "finished", "backbone.index"))
        assert os.path.exists(os.path.join(member, "training_curves.png"))
        assert not os.path.exists(os.path.join(member, describe.BACKBONE_PNG))
    assert not os.path.exists(os.path.join(run_dir, describe.MODEL_PNG))
    description = describe.read_description(run_dir)
    assert [m.name for m in description.members] == ["small_conv_member_0",
                                                        "small_conv_member_1"]
    assert "Graphviz's dot is not on PATH" in description.diagram["skipped"]
    assert "Diagram skipped: Graphviz's dot is not on PATH" in summary.format()
    assert "Ensemble: 2 members' backbones" in open(
        os.path.join(run_dir, describe.SUMMARY_TXT)).read()

    loaded = tf.saved_model.load(summary.pushed_path)
    folder = os.path.join(omniglot_tiny, sorted(os.listdir(omniglot_tiny))[0])
    character = os.path.join(folder, sorted(os.listdir(folder))[0])
    images = [open(os.path.join(character, n), "rb").read()
              for n in sorted(os.listdir(character))[:4]]
    embedding = loaded.signatures[signatures.EMBED](
        image=tf.constant(images))[signatures.EMBEDDING].numpy()
    assert embedding.shape == (4, 2 * EMBEDDING_DIM)
    np.testing.assert_allclose(np.linalg.norm(embedding, axis=-1), 1.0, rtol=1e-4)
    out = loaded.signatures[signatures.COMPARE](
        left_image=tf.constant(images[:2]), right_image=tf.constant(images[2:]))
    np.testing.assert_allclose(out[signatures.DISTANCE].numpy(),
                               np.linalg.norm(embedding[:2] - embedding[2:], axis=-1),
                               rtol=1e-4, atol=1e-5)
