"""Which tf.distribute strategy the Trainer uses on the hardware it finds."""

from __future__ import annotations

import json
import os

import tensorflow as tf


def choose_strategy() -> tf.distribute.Strategy:
    """MultiWorkerMirrored when TF_CONFIG names several workers, Mirrored on several GPUs,
    else the default strategy."""
    cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
    if sum(len(cluster.get(k, [])) for k in ("chief", "worker")) > 1:
        return tf.distribute.MultiWorkerMirroredStrategy()
    if len(tf.config.list_logical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()
