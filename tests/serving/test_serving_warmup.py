"""write_warmup_requests: the file TF Serving replays before serving a version."""

from __future__ import annotations

import os

import pytest
from tensorflow.core.framework import types_pb2

from siamese_tfx.serving.requests import tensor_proto_to_ndarray
from siamese_tfx.serving.warmup import read_warmup_requests, write_warmup_requests


def test_writes_compare_and_embed_requests_at_two_batch_sizes(tmp_path, images):
    path = write_warmup_requests(str(tmp_path), "siamese", images[:3])

    assert path == os.path.join(str(tmp_path), "assets.extra", "tf_serving_warmup_requests")
    logs = read_warmup_requests(path)
    requests = [log.predict_log.request for log in logs]
    assert [log.WhichOneof("log_type") for log in logs] == ["predict_log"] * 4
    assert [r.model_spec.signature_name for r in requests] == ["compare", "embed"] * 2
    assert {r.model_spec.name for r in requests} == {"siamese"}
    compare_one, embed_one, compare_all, embed_all = requests
    assert set(compare_all.inputs) == {"left_image", "right_image"}
    assert set(embed_all.inputs) == {"image"}
    assert compare_all.inputs["left_image"].dtype == types_pb2.DT_STRING
    assert tensor_proto_to_ndarray(compare_all.inputs["left_image"]).tolist() == images[:3]
    right = tensor_proto_to_ndarray(compare_all.inputs["right_image"]).tolist()
    assert right == images[1:3] + images[:1]
    assert tensor_proto_to_ndarray(embed_one.inputs["image"]).tolist() == images[:1]
    assert tensor_proto_to_ndarray(compare_one.inputs["right_image"]).tolist() == images[:1]


def test_one_image_gives_one_batch_size(tmp_path, images):
    path = write_warmup_requests(str(tmp_path), "m", images[:1])

    assert len(read_warmup_requests(path)) == 2


def test_requests_run_on_the_saved_model(tmp_path, models, images, reference):
    import tensorflow as tf

    model = reference(max(models.versions, default=-1))
    path = write_warmup_requests(str(tmp_path), "s", images)
    for log in read_warmup_requests(path):
        request = log.predict_log.request
        inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
        outputs = model.signatures[request.model_spec.signature_name](**inputs)
        assert all(v.shape[0] == inputs[next(iter(inputs))].shape[0] for v in outputs.values())


def test_needs_an_image(tmp_path):
    with pytest.raises(ValueError, match="at least one"):
        write_warmup_requests(str(tmp_path), "siamese", [])
