"""One training step of the real Siamese model and loss, with 1 and with 2 replicas.

Run as a subprocess (the logical-device split must happen before TensorFlow initialises and
would disturb other tests): splits the CPU into 2 logical devices, trains one step on the same
global batch with MirroredStrategy over 1 device and over 2, and prints a JSON report.
"""

import json
import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from distributed_fixtures import compile_siamese  # noqa: E402

from siamese_tfx.components.contract import features  # noqa: E402
from siamese_tfx.components.contract.config import ImageConfig, ModelConfig, TrainConfig  # noqa: E402
from siamese_tfx.components.trainer import distribute  # noqa: E402

IMAGE = ImageConfig(height=16, width=16, channels=1)
MODEL = ModelConfig(embedding_dim=8, margin=1.0)
LEARNING_RATE = 1e-3
BATCH = TrainConfig(batch_size=8)


def _global_batch(n: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    rng = np.random.default_rng(0)
    x = {features.transformed_name(k): rng.uniform(size=(n, 16, 16, 1)).astype(np.float32)
         for k in features.IMAGE_KEYS}
    return x, np.array([1, 0] * (n // 2), dtype=np.int64)


def _one_step(devices: list[str], initial: list[np.ndarray] | None, mixed: bool = False,
              sgd: bool = False):
    strategy = tf.distribute.MirroredStrategy(devices)
    size = distribute.global_batch_size(BATCH, strategy.num_replicas_in_sync)
    siamese, _ = compile_siamese(strategy, IMAGE, MODEL, LEARNING_RATE, mixed)
    if sgd:
        # Adam's first step is nearly lr * sign(gradient), blind to a wrongly scaled gradient
        # (summed instead of averaged over replicas); SGD's step is proportional to it.
        with strategy.scope():
            siamese.compile(optimizer=tf.keras.optimizers.SGD(0.5), loss=siamese.loss)
    if initial is not None:
        siamese.set_weights(initial)
    before = [w.copy() for w in siamese.get_weights()]
    x, y = _global_batch(size)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(size)
    history = siamese.fit(dataset, steps_per_epoch=1, epochs=1, verbose=0)
    return {"replicas": strategy.num_replicas_in_sync, "global_batch": size,
            "loss": float(history.history["loss"][0]), "before": before,
            "after": siamese.get_weights(), "model": siamese}


def _max_diff(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))


def main() -> int:
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    tf.keras.utils.set_random_seed(0)
    one = _one_step(["/cpu:0"], None)
    two = _one_step(["/cpu:0", "/cpu:1"], one["before"])
    one_sgd = _one_step(["/cpu:0"], one["before"], sgd=True)
    two_sgd = _one_step(["/cpu:0", "/cpu:1"], one["before"], sgd=True)
    mixed = _one_step(["/cpu:0", "/cpu:1"], None, mixed=True)
    conv = next(layer for layer in mixed["model"].get_layer("small_conv").layers
                if isinstance(layer, tf.keras.layers.Conv2D))
    report = {
        "replicas": [one["replicas"], two["replicas"]],
        "global_batch": [one["global_batch"], two["global_batch"]],
        "loss": [one["loss"], two["loss"]],
        "adam": {"max_weight_difference": _max_diff(one["after"], two["after"]),
                 "max_weight_change": _max_diff(one["before"], one["after"])},
        "sgd": {"max_weight_difference": _max_diff(one_sgd["after"], two_sgd["after"]),
                "max_weight_change": _max_diff(one_sgd["before"], one_sgd["after"])},
        "mixed": {"conv_compute_dtype": conv.compute_dtype,
                  "variable_dtype": conv.variable_dtype,
                  "output_dtype": mixed["model"].output.dtype.name,
                  "optimizer": type(mixed["model"].optimizer).__name__,
                  "loss": mixed["loss"]},
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
