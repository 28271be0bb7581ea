"""Warmup requests for TF Serving, written into the exported SavedModel.

TF Serving (and `serving.server`) replays `<version>/assets.extra/tf_serving_warmup_requests`, a
TFRecord of PredictionLogs, before it serves a version, so the first real request does not pay
for graph tracing and memory allocation. The Trainer calls `write_warmup_requests` at export.
"""

from __future__ import annotations

import os
from typing import Sequence

import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from siamese_tfx.components.contract import signatures
from siamese_tfx.serving import requests


def warmup_predict_requests(
    model_name: str, images: Sequence[bytes], identify: bool = False
) -> list[predict_pb2.PredictRequest]:
    """PredictRequests for `compare` and `embed` (and `identify`, for a gallery model) at batch
    size 1 and len(images).

    The pairs of `compare` are (images[i], images[i+1 mod n]), so each image is also compared
    with a different one.
    """
    if not images:
        raise ValueError("warmup needs at least one encoded image")
    images = list(images)
    batches = [images[:1]] if len(images) == 1 else [images[:1], images]
    warmup = []
    for batch in batches:
        shifted = batch[1:] + batch[:1]
        warmup.append(requests.compare_request(model_name, batch, shifted))
        warmup.append(requests.embed_request(model_name, batch))
        if identify:
            warmup.append(requests.identify_request(model_name, batch))
    return warmup


def write_warmup_requests(saved_model_dir: str, model_name: str, images: Sequence[bytes],
                          identify: bool = False) -> str:
    """Writes `assets.extra/tf_serving_warmup_requests` into an exported SavedModel.

    Args:
        saved_model_dir: The SavedModel folder (local path or any URI tf.io.gfile handles).
        model_name: The name the model is served under.
        images: A few encoded images (PNG/JPEG/BMP/GIF) like those the model will serve.
        identify: Also warm up `identify` (a gallery model, `siamese-tfx gallery build`).
    Returns:
        The path of the written file.
    """
    directory = os.path.join(saved_model_dir, signatures.WARMUP_DIR)
    tf.io.gfile.makedirs(directory)
    path = os.path.join(directory, signatures.WARMUP_FILE)
    with tf.io.TFRecordWriter(path) as writer:
        for request in warmup_predict_requests(model_name, images, identify):
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
            writer.write(log.SerializeToString())
    return path


def read_warmup_requests(path: str) -> list[prediction_log_pb2.PredictionLog]:
    """The PredictionLogs of a warmup file."""
    return [
        prediction_log_pb2.PredictionLog.FromString(record.numpy())
        for record in tf.data.TFRecordDataset(path)
    ]
