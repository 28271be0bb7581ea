"""Infra validation through a real model server process on 127.0.0.1: a model that serves what
it computes in-process is blessed; one that cannot load in the serving stack, lacks a signature
of the contract, answers differently from run to run or answers NaN is not, and says why."""

from __future__ import annotations

import json
import os

import pytest
import serving_fixtures as fx

from siamese_tfx.components.contract.config import InfraValidationConfig
from siamese_tfx.components.infra_validator import executor as infra_lib
from siamese_tfx.serving.warmup import warmup_predict_requests, write_warmup_requests

NAME = "candidate"
CONFIG = InfraValidationConfig(infra_load_timeout_s=120.0, infra_request_timeout_s=30.0)


def _model(tmp_path, images, warmup_images=None, warmup_signatures=None, **broken) -> str:
    path = fx.build_model(str(tmp_path / "candidate"), seed=3, threshold=0.6, **broken)
    if warmup_signatures is None:
        write_warmup_requests(path, NAME, warmup_images or images[:3])
    elif warmup_signatures:
        # Only the requests of these signatures (a model exported without the others).
        import tensorflow as tf
        from tensorflow_serving.apis import prediction_log_pb2

        os.makedirs(os.path.join(path, "assets.extra"))
        with tf.io.TFRecordWriter(os.path.join(path, "assets.extra",
                                               "tf_serving_warmup_requests")) as writer:
            for request in warmup_predict_requests(NAME, images[:3]):
                if request.model_spec.signature_name in warmup_signatures:
                    writer.write(prediction_log_pb2.PredictionLog(
                        predict_log=prediction_log_pb2.PredictLog(request=request)
                    ).SerializeToString())
    return path


def test_a_sound_model_is_blessed_with_every_request_checked(tmp_path, images):
    report = infra_lib.validate_model(_model(tmp_path, images), NAME, CONFIG)
    assert report.blessed, report.reason
    assert report.reason == ""
    # 2 batches x (compare, embed) from the warmup file, then compare, embed and
    # serving_default from the contract.
    assert [c.source for c in report.checks] == [
        "warmup request 0", "warmup request 1", "warmup request 2", "warmup request 3",
        "contract: compare", "contract: embed", "contract: serving_default"]
    assert all(c.ok for c in report.checks)
    assert max(c.max_abs_difference for c in report.checks) <= CONFIG.infra_tolerance
    assert report.server_seconds > 0


def test_model_without_the_pair_signature_fails_in_the_serving_stack(tmp_path, images):
    # Its warmup requests still ask for `compare`: the server refuses to load it, as TF
    # Serving does when warmup fails.
    path = _model(tmp_path, images, signatures=("serving_default", "embed"))
    import tensorflow as tf

    assert set(tf.saved_model.load(path).signatures) == {"serving_default", "embed"}
    report = infra_lib.validate_model(path, NAME, CONFIG)
    assert not report.blessed
    assert "could not load the model" in report.reason
    assert "FAILED_PRECONDITION" in report.reason and "compare" in report.reason
    assert report.checks == []
    assert any("Failed to load" in line for line in report.server_log_tail)


def test_missing_contract_signature_is_caught_even_when_the_model_loads(tmp_path, images):
    path = _model(tmp_path, images, warmup_signatures=("embed",),
                  signatures=("serving_default", "embed"))
    report = infra_lib.validate_model(path, NAME, CONFIG)
    assert not report.blessed
    failed = [c for c in report.checks if not c.ok]
    assert [c.source for c in failed] == ["contract: compare"]
    assert "FAILED_PRECONDITION" in failed[0].problem
    assert "1 of 5 requests failed" in report.reason and "contract: compare" in report.reason


def test_answers_that_differ_from_in_process_are_refused(tmp_path, images):
    path = _model(tmp_path, images, distance_noise=0.01)
    report = infra_lib.validate_model(path, NAME, CONFIG)
    assert not report.blessed
    assert "differs from the in-process answer" in report.reason
    assert "'distance'" in report.reason
    # Embeddings carry no noise: those requests pass.
    assert all(c.ok for c in report.checks if c.signature == "embed")


def test_non_finite_answers_are_refused(tmp_path, images):
    path = _model(tmp_path, images, nan_embedding=True)
    report = infra_lib.validate_model(path, NAME, CONFIG)
    assert not report.blessed
    assert "is not finite" in report.reason


def test_a_model_without_warmup_requests_is_not_blessed(tmp_path, images):
    path = _model(tmp_path, images, warmup_signatures=())
    report = infra_lib.validate_model(path, NAME, CONFIG)
    assert not report.blessed
    assert "no warmup requests" in report.reason


def test_executor_writes_the_infra_blessing_pusher_reads(tmp_path, images):
    import dataclasses

    from tfx.components.util import model_utils
    from tfx.types import standard_artifacts
    from tfx.utils import path_utils

    model = standard_artifacts.Model()
    model.uri = str(tmp_path / "model")
    fx.build_model(path_utils.serving_model_path(model.uri), seed=3,
                   signatures=("serving_default", "embed"))
    write_warmup_requests(path_utils.serving_model_path(model.uri), NAME, images[:2])
    blessing = standard_artifacts.InfraBlessing()
    blessing.uri = str(tmp_path / "blessing")
    infra_lib.Executor().Do(
        {infra_lib.MODEL_KEY: [model]}, {infra_lib.BLESSING_KEY: [blessing]},
        {infra_lib.INFRA_CONFIG_KEY: json.dumps(dataclasses.asdict(CONFIG)),
         infra_lib.MODEL_NAME_KEY: NAME})
    assert not model_utils.is_infra_validated(blessing)
    assert os.path.exists(os.path.join(blessing.uri, infra_lib.NOT_BLESSED_FILE))
    assert not os.path.exists(os.path.join(blessing.uri, infra_lib.BLESSED_FILE))
    reason = blessing.get_string_custom_property(infra_lib.REASON_PROPERTY)
    assert "compare" in reason
    with open(os.path.join(blessing.uri, infra_lib.REPORT_JSON)) as f:
        assert json.load(f)["reason"] == reason
    with open(os.path.join(blessing.uri, infra_lib.SERVER_LOG)) as f:
        assert "Failed to load candidate version 1" in f.read()


@pytest.mark.parametrize("tolerance", [-1.0])
def test_config_refuses_a_negative_tolerance(tolerance):
    with pytest.raises(ValueError, match="infra_tolerance"):
        InfraValidationConfig(infra_tolerance=tolerance)
