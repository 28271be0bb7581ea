"""Training: the TFX Trainer entry point (`run_fn`) and the loop behind it."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
from absl import logging
from tfx import v1 as tfx
from tfx_bsl.public import tfxio

from components import features
from components.trainer import calibration, distribute, export, losses, model as model_lib
from pipeline.config import ImageConfig, ModelConfig, TrainConfig, from_dict

keras = tf.keras

METRICS_FILE = "training_metrics.json"


def make_dataset(
    file_pattern: list[str],
    data_accessor: tfx.components.DataAccessor,
    tf_transform_output: tft.TFTransformOutput,
    batch_size: int,
    shuffle: bool = True,
) -> tf.data.Dataset:
    """Transformed examples as repeated (features, label) batches."""
    return data_accessor.tf_dataset_factory(
        file_pattern,
        tfxio.TensorFlowDatasetOptions(
            batch_size=batch_size, label_key=features.LABEL, shuffle=shuffle
        ),
        tf_transform_output.transformed_metadata.schema,
    )


def calibrate(
    model: keras.Model, dataset: tf.data.Dataset, steps: int
) -> dict[str, float]:
    """Distances on `steps` eval batches -> the accuracy-maximising threshold."""
    distances, labels = [], []
    for batch_features, batch_labels in dataset.take(steps):
        distances.append(np.reshape(model(batch_features, training=False), [-1]))
        labels.append(np.reshape(batch_labels, [-1]))
    threshold, accuracy = calibration.best_threshold(
        np.concatenate(distances), np.concatenate(labels)
    )
    return {"threshold": threshold, "eval_accuracy_at_threshold": accuracy,
            "calibration_pairs": int(sum(len(x) for x in labels))}


# TFX Trainer calls this.
def run_fn(fn_args: tfx.components.FnArgs) -> None:
    image = from_dict(ImageConfig, fn_args.custom_config["image"])
    model_cfg = from_dict(ModelConfig, fn_args.custom_config["model"])
    train_cfg = from_dict(TrainConfig, fn_args.custom_config["train"])
    tf.keras.utils.set_random_seed(fn_args.custom_config.get("seed", 0))
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)

    strategy = distribute.choose_strategy()
    logging.info("Training with %s, %d replica(s)", type(strategy).__name__,
                 strategy.num_replicas_in_sync)
    train_ds = make_dataset(fn_args.train_files, fn_args.data_accessor, tf_transform_output,
                            train_cfg.batch_size)
    eval_ds = make_dataset(fn_args.eval_files, fn_args.data_accessor, tf_transform_output,
                           train_cfg.batch_size, shuffle=False)
    with strategy.scope():
        siamese, backbone = model_lib.build_siamese(image, model_cfg)
        siamese.compile(
            optimizer=keras.optimizers.Adam(train_cfg.learning_rate),
            loss=losses.ContrastiveLoss(model_cfg.margin),
        )
    history = siamese.fit(
        train_ds,
        steps_per_epoch=fn_args.train_steps,
        epochs=1,
        verbose=2,
        callbacks=[keras.callbacks.TensorBoard(log_dir=fn_args.model_run_dir)],
    )
    result = calibrate(siamese, eval_ds, fn_args.eval_steps)
    result["final_train_loss"] = float(history.history["loss"][-1])
    logging.info("Calibrated: %s", result)
    export.export_model(siamese, backbone, tf_transform_output, result["threshold"],
                        model_cfg.margin, fn_args.serving_model_dir, image,
                        fn_args.custom_config["model_name"])
    with tf.io.gfile.GFile(os.path.join(fn_args.model_run_dir, METRICS_FILE), "w") as f:
        f.write(json.dumps(result, indent=1))
