"""One typed config: every setting reaches the CLI with help, and bad values are refused."""

import argparse
import dataclasses
import json

import pytest

from siamese_tfx.components.contract.config import DataConfig, ModelConfig, from_dict
from siamese_tfx.pipeline import commands
from siamese_tfx.pipeline.config import PipelineConfig


def _parser():
    parser = argparse.ArgumentParser()
    commands.add_config_options(parser)
    return parser


def _all_fields():
    config = PipelineConfig()
    for f in dataclasses.fields(PipelineConfig):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            yield from ((f.name, g) for g in dataclasses.fields(value))
        else:
            yield "pipeline", f


def test_every_setting_has_an_option_with_help():
    helps = {a.dest: a.help for a in _parser()._actions}
    for section, f in _all_fields():
        assert helps.get(f"{section}.{f.name}"), f"no option or help for {section}.{f.name}"


def test_options_override_only_what_is_given():
    args = _parser().parse_args(["--margin", "0.5", "--class-depth", "2", "--no-enable-cache",
                                 "--image-root", "/data"])
    config = commands.config_from_args(args, PipelineConfig())
    assert config.model.margin == 0.5 and config.data.class_depth == 2
    assert config.enable_cache is False and config.data.image_root == "/data"
    assert config.train == PipelineConfig().train


def test_round_trips_through_json():
    config = PipelineConfig(pipeline_root="/r", serving_dir="/s",
                            data=DataConfig(image_root="/d", seed=9),
                            model=ModelConfig(margin=2.0))
    assert PipelineConfig.from_dict(json.loads(config.to_json())) == config


def test_unknown_and_invalid_settings_are_refused():
    with pytest.raises(ValueError, match="unknown setting.*'marign'"):
        from_dict(ModelConfig, {"marign": 1.0})
    with pytest.raises(ValueError, match="margin must be > 0"):
        ModelConfig(margin=0)
    with pytest.raises(ValueError, match="eval_class_fraction"):
        DataConfig(eval_class_fraction=1.0)
    with pytest.raises(SystemExit):
        _parser().parse_args(["--backbone", "no_such_backbone"])


def test_config_file_is_the_base_and_options_override_it(tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"model_name": "faces", "model": {"margin": 2.0}}))
    args = _parser().parse_args(["--config", str(path), "--margin", "0.25"])
    config = commands.config_from_args(args, PipelineConfig(pipeline_name="ignored"))
    assert config.model_name == "faces" and config.model.margin == 0.25
    assert config.pipeline_name == PipelineConfig().pipeline_name  # the file replaced the base
    path.write_text(json.dumps({"model": {"marign": 2.0}}))
    with pytest.raises(ValueError, match=f"{path}.*unknown setting.*'marign'"):
        commands.config_from_args(_parser().parse_args(["--config", str(path)]))


def test_one_generator_serves_the_server_and_kubeflow_settings():
    from siamese_tfx.components.contract import options
    from siamese_tfx.kubeflow.config import KubeflowConfig
    from siamese_tfx.serving.config import ServerConfig

    parser = argparse.ArgumentParser()
    options.add_dataclass_options(parser, ServerConfig, "server")
    options.add_dataclass_options(parser, KubeflowConfig, "kubeflow")
    helps = {a.dest for a in parser._actions if a.help}
    for cls, prefix in ((ServerConfig, "server"), (KubeflowConfig, "kubeflow")):
        for f in dataclasses.fields(cls):
            assert (f"{prefix}.{f.name}" in helps) == ("help" in f.metadata), f.name
    args = parser.parse_args([
        "--model-base", "/m", "--max-message-mb", "3", "--poll-interval", "0.5",
        "--no-warmup", "--max-concurrent-rpcs", "7", "--beam-runner", "FlinkRunner",
        "--flink-master", "f:8081", "--beam-extra-args=--a=1", "--beam-extra-args=--b=2"])
    server = options.config_from_args(args, ServerConfig, "server")
    assert (server.model_base, server.max_message_bytes, server.poll_interval_s) == (
        "/m", 3 * 1024 * 1024, 0.5)
    assert server.warmup is False and server.max_concurrent_rpcs == 7
    assert server.model_name == ServerConfig.model_name  # not given: the default
    kf = options.config_from_args(args, KubeflowConfig, "kubeflow")
    assert kf.flink_master == "f:8081" and kf.beam_extra_args == ("--a=1", "--b=2")


def test_serving_limits_reach_the_trainer_and_the_evaluator():
    from siamese_tfx.components.contract.config import ServingLimitsConfig, TrainerSettings
    from siamese_tfx.pipeline.pipeline import make_eval_config

    args = _parser().parse_args(["--serving-max-image-pixels", "1000000",
                                 "--serving-max-batch-size", "64"])
    config = commands.config_from_args(args, PipelineConfig())

    # The Trainer's custom_config, as TFX hands it to run_fn (JSON).
    custom_config = json.loads(json.dumps(config.trainer_settings().to_custom_config()))
    settings = TrainerSettings.from_custom_config(custom_config)
    assert settings.serving_limits == ServingLimitsConfig(serving_max_image_pixels=1_000_000,
                                                          serving_max_batch_size=64)
    assert config.data.max_image_pixels == DataConfig().max_image_pixels  # ingestion's own
    assert make_eval_config(config).model_specs[0].inference_batch_size == 64
    with pytest.raises(ValueError, match="serving_max_batch_size must be >= 1"):
        ServingLimitsConfig(serving_max_batch_size=0)


def test_gallery_options_add_the_gallery_builder_before_evaluation(tmp_path):
    """--gallery and its settings fill GalleryConfig; with a gallery, GalleryBuilder takes the
    Trainer's model and the Evaluator, InfraValidator and Pusher take GalleryBuilder's."""
    from siamese_tfx.components.contract import errors
    from siamese_tfx.components.contract.config import GalleryConfig
    from siamese_tfx.components.gallery_builder.component import gallery_stamp
    from siamese_tfx.pipeline import pipeline as p

    gallery = tmp_path / "gallery"
    (gallery / "alice").mkdir(parents=True)
    (gallery / "alice" / "0.png").write_bytes(b"png")
    args = _parser().parse_args(["--gallery", str(gallery), "--gallery-class-depth", "2",
                                 "--gallery-aggregate", "mean", "--gallery-top-k", "3"])
    base = PipelineConfig(pipeline_root=str(tmp_path / "r"), serving_dir=str(tmp_path / "s"),
                          data=DataConfig(image_root=str(tmp_path)))
    config = commands.config_from_args(args, base)
    assert config.gallery == GalleryConfig(str(gallery), 2, "mean", 3) and config.gallery.enabled
    assert PipelineConfig.from_dict(json.loads(config.to_json())) == config
    assert not base.gallery.enabled
    producers = {}
    for cfg in (base, config):
        nodes = {n.id: n for n in p.create_pipeline(cfg).components}
        assert tuple(sorted(nodes)) == tuple(sorted(p.component_ids(cfg)))
        producers[cfg.gallery.enabled] = {n: nodes[n].inputs["model"].producer_component_id
                                          for n in (p.EVALUATOR, p.INFRA_VALIDATOR, p.PUSHER)}
    assert p.GALLERY_BUILDER in p.component_ids(config)
    assert p.GALLERY_BUILDER not in p.component_ids(base)
    assert set(producers[False].values()) == {p.TRAINER}
    assert set(producers[True].values()) == {p.GALLERY_BUILDER}
    # The cache key changes with the gallery's files.
    stamp = gallery_stamp(str(gallery))
    (gallery / "alice" / "1.png").write_bytes(b"png")
    assert stamp and gallery_stamp(str(gallery)) != stamp

    with pytest.raises(SystemExit):
        _parser().parse_args(["--gallery-aggregate", "max"])
    with pytest.raises(ValueError, match="gallery_top_k must be >= 1"):
        GalleryConfig(gallery_top_k=0)
    with pytest.raises(ValueError, match="gallery_path needs the euclidean head"):
        commands.config_from_args(_parser().parse_args(
            ["--gallery", "/g", "--head", "l1_sigmoid", "--loss", "binary_crossentropy"]))
    with pytest.raises(errors.UsageError, match="--gallery '/no/such/gallery'"):
        commands._check_inputs(dataclasses.replace(
            base, gallery=GalleryConfig(gallery_path="/no/such/gallery")))
