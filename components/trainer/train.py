"""Training: the TFX Trainer entry point (`run_fn`) and the loop behind it.

`run_fn` reads as its steps: parse the one typed `TrainerSettings` from the custom_config and
set up the strategy and data (`TrainingRun.start`), train each member (`train_member`),
ensemble and calibrate them (`served_model`), export (`export_and_record`).

The triplet loss trains on class batches (`class_batches.py`: `TrainConfig.classes_per_batch`
classes of the train split per step, recovered from its positive pairs, optionally with rotation
classes); every other loss on the sampled pairs. `TrainConfig.augment` distorts the training
batches (never the eval split or the served model); `TrainConfig.lr_schedule` decays Adam's
learning rate.

After training, the match threshold is calibrated on the eval split (TrainConfig.threshold_mode)
and reported with accuracy, precision, recall, AUC and EER at it, in the log and in
`<model_run_dir>/training_metrics.json`; the training curves are TensorBoard scalars under
`<model_run_dir>/curves/` and `<model_run_dir>/training_curves.png`.

With `ModelConfig.ensemble_members` K > 1, K Siamese networks are trained one after the other
(seeds seed .. seed+K-1, each for `train_steps`), each with its curves, logs and backups in
`<model_run_dir>/member_<i>/`; a finished member's backbone weights are kept there
(`finished/`), so a restarted Trainer resumes at the member it was training. With
`ensemble_class_fraction` < 1 each member's class batches draw from its own random share of the
train split's classes (bagging by identity). The exported model
is their ensemble (`model.build_ensemble`), calibrated as one; training_metrics.json also lists
each member's own figures.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
from absl import logging
from tfx import v1 as tfx
from tfx_bsl.public import tfxio

from siamese_tfx.components.contract import features
from siamese_tfx.components.contract.config import (ImageConfig, ModelConfig, TrainConfig,
                                                    TrainerSettings)
from siamese_tfx.components.trainer import (augment, calibration, class_batches, curves, describe,
                                            distribute, export, heads, progress)
from siamese_tfx.components.trainer import model as model_lib

keras = tf.keras

METRICS_FILE = "training_metrics.json"
FINISHED_SUBDIR = "finished"  # an ensemble member's backbone weights once it is trained
# What training_metrics.json reports for each ensemble member (calibrated on its own).
MEMBER_METRICS = ("threshold", "eval_accuracy", "eval_auc", "eval_eer")


def make_dataset(
    file_pattern: list[str],
    data_accessor: tfx.components.DataAccessor,
    tf_transform_output: tft.TFTransformOutput,
    batch_size: int,
    shuffle: bool = True,
    num_epochs: Optional[int] = None,
) -> tf.data.Dataset:
    """Transformed examples as (features, label) batches, repeated unless `num_epochs`."""
    return data_accessor.tf_dataset_factory(
        file_pattern,
        tfxio.TensorFlowDatasetOptions(
            batch_size=batch_size, label_key=features.LABEL, shuffle=shuffle,
            num_epochs=num_epochs,
        ),
        tf_transform_output.transformed_metadata.schema,
    )


def class_batches_or_none(
    file_pattern: list[str], data_accessor: tfx.components.DataAccessor,
    tf_transform_output: tft.TFTransformOutput, batch_size: int, train_cfg: TrainConfig,
    seed: int = 0, class_fraction: float = 1.0,
) -> Optional[tuple[tf.data.Dataset, dict[str, int]]]:
    """The triplet loss's class batches (`class_batches.py`) built from one pass over the train
    split, with what they draw from ({"train_classes": the classes they use, "train_split_classes":
    the split's classes with two images or more}); None when `classes_per_batch` is 0 or the
    split has too few classes (the pair batches are used then). `class_fraction` < 1: drawn from
    that fraction of the classes."""
    if train_cfg.classes_per_batch <= 0:
        return None
    pairs = make_dataset(file_pattern, data_accessor, tf_transform_output, 256, shuffle=False,
                         num_epochs=1)
    images, classes = class_batches.classes_from_pairs(class_batches.read_pairs(pairs))
    counts = np.bincount(classes) if len(classes) else np.zeros(0, np.int64)
    eligible = int(np.sum(counts >= 2))
    variants = 4 if train_cfg.rotation_classes else 1
    logging.info("Class batches: %d images of the train split in %d classes (%d with two "
                 "images or more)", len(images), len(counts), eligible)
    if eligible * variants < train_cfg.classes_per_batch:
        logging.warning("Only %d classes in the train split (classes_per_batch %d): training "
                        "the triplet loss on pair batches instead", eligible * variants,
                        train_cfg.classes_per_batch)
        return None
    drawn = {"train_classes": class_batches.bag_size(eligible, class_fraction),
             "train_split_classes": eligible}
    if class_fraction < 1.0:
        logging.info("This member trains on %d of the %d classes (drawn with seed %d)",
                     drawn["train_classes"], eligible, seed)
    return class_batches.class_batch_dataset(
        images, classes, batch_size, train_cfg.classes_per_batch,
        rotations=train_cfg.rotation_classes, seed=seed, class_fraction=class_fraction), drawn


def training_batches(
    fn_args: tfx.components.FnArgs, tf_transform_output: tft.TFTransformOutput,
    batch_size: int, model_cfg: ModelConfig, train_cfg: TrainConfig, seed: int,
) -> tuple[tf.data.Dataset, dict[str, int]]:
    """The training batches: class batches for the triplet loss (when the split allows), else
    the sampled pairs; augmented with `TrainConfig.augment` (training only: the served model
    never sees it). Also the classes the class batches draw from (`class_batches_or_none`; {}
    for pair batches)."""
    train_ds, drawn = None, {}
    if model_cfg.loss == "triplet":
        class_batched = class_batches_or_none(fn_args.train_files, fn_args.data_accessor,
                                              tf_transform_output, batch_size, train_cfg, seed,
                                              model_cfg.ensemble_class_fraction)
        if class_batched is not None:
            train_ds, drawn = class_batched
    if train_ds is None and model_cfg.ensemble_class_fraction < 1.0:
        raise ValueError(
            f"ensemble_class_fraction {model_cfg.ensemble_class_fraction} needs the triplet "
            f"loss's class batches, but this run trains on pair batches (classes_per_batch "
            f"{train_cfg.classes_per_batch}, or too few classes in the train split)")
    if train_ds is None:
        train_ds = make_dataset(fn_args.train_files, fn_args.data_accessor, tf_transform_output,
                                batch_size)
    return augmented(train_ds, train_cfg), drawn


def augmented(train_ds: tf.data.Dataset, train_cfg: TrainConfig) -> tf.data.Dataset:
    """The training batches distorted as `TrainConfig.augment` (and `flip_horizontal`) say."""
    if train_cfg.augment:
        train_ds = augment.augment_pairs(train_ds, flip=train_cfg.flip_horizontal)
    return train_ds


def learning_rate(train_cfg: TrainConfig, steps: int) -> Any:
    """Adam's learning rate: constant, or a cosine decay to 5% over `steps`."""
    if train_cfg.lr_schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(train_cfg.learning_rate, max(1, steps),
                                                      alpha=0.05)
    return train_cfg.learning_rate


def calibrate(
    model: keras.Model, dataset: tf.data.Dataset, steps: int, mode: str = "accuracy",
    target_false_match_rate: float = 0.01,
) -> dict[str, float]:
    """Distances on `steps` eval batches -> the threshold (`calibration.calibrate`'s `mode`) and
    the verification metrics at it (accuracy, precision, recall, AUC, EER, ...)."""
    distances, labels = [], []
    for batch_features, batch_labels in dataset.take(steps):
        distances.append(np.reshape(model(batch_features, training=False), [-1]))
        labels.append(np.reshape(batch_labels, [-1]))
    metrics = calibration.calibrate(np.concatenate(distances), np.concatenate(labels), mode,
                                    target_false_match_rate)
    return {"threshold": metrics["threshold"], "threshold_mode": mode,
            "eval_accuracy_at_threshold": metrics["accuracy"],
            "calibration_pairs": int(sum(len(x) for x in labels)),
            **{f"eval_{k}": v for k, v in metrics.items() if k != "threshold"}}


def compile_for_training(
    strategy: tf.distribute.Strategy, image: ImageConfig, model_cfg: ModelConfig,
    learning_rate: Any, mixed_precision: bool = False, backbone_name: str = "",
    steps_per_execution: int = 1, jit_compile: bool = False,
) -> tuple[keras.Model, keras.Model, keras.Model]:
    """(siamese, backbone, trainable) built in `strategy`'s scope; `trainable`
    (`model.training_model`: the backbone run once on the stacked pairs, then the Siamese head,
    or the two embeddings for the triplet loss) is compiled with Adam, the configured loss and
    the pair-accuracy curve metric. `learning_rate`: a float or a Keras schedule."""
    with strategy.scope():
        siamese, backbone = distribute.build_model(image, model_cfg, mixed_precision,
                                                   backbone_name=backbone_name)
        trainable = model_lib.training_model(siamese, model_cfg, backbone)
        trainable.compile(optimizer=keras.optimizers.Adam(learning_rate),
                          loss=model_lib.loss_for(model_cfg),
                          metrics=model_lib.metrics_for(model_cfg),
                          steps_per_execution=steps_per_execution, jit_compile=jit_compile)
    return siamese, backbone, trainable


def member_dir(model_run_dir: str, index: int, members: int) -> str:
    """Where ensemble member `index` keeps its curves, logs and backups: the run directory
    itself for a single model, `<model_run_dir>/member_<index>` in an ensemble."""
    return model_run_dir if members == 1 else os.path.join(model_run_dir, f"member_{index}")


def finished_weights(directory: str) -> str:
    """The checkpoint prefix of a finished ensemble member's backbone weights."""
    return os.path.join(directory, FINISHED_SUBDIR, "backbone")


def save_finished(backbone: keras.Model, directory: str, record: dict[str, Any]) -> None:
    """Records a finished member's backbone and its training record (`final_train_loss`, and
    the classes it drew from), so a restarted Trainer does not train it again (the chief writes
    them; other workers write a temporary copy, as for the export)."""
    finished = os.path.dirname(finished_weights(directory))
    written = distribute.write_dir(finished)
    tf.io.gfile.makedirs(written)
    backbone.save_weights(os.path.join(written, os.path.basename(finished_weights(directory))))
    with tf.io.gfile.GFile(os.path.join(written, os.path.basename(_finished_summary(directory))),
                           "w") as f:
        f.write(json.dumps(record))
    distribute.discard(written, finished)


def _finished_summary(directory: str) -> str:
    return os.path.join(directory, FINISHED_SUBDIR, "member.json")


def is_finished(directory: str) -> bool:
    """Whether the member in `directory` finished: its summary is written after its weights."""
    return (tf.io.gfile.exists(finished_weights(directory) + ".index")
            and tf.io.gfile.exists(_finished_summary(directory)))


def restore_finished(backbone: keras.Model, directory: str) -> Optional[dict[str, Any]]:
    """Loads a finished member's backbone weights and returns its training record (as
    `save_finished` wrote it); None (and nothing loaded) when it has not finished."""
    if not is_finished(directory):
        return None
    backbone.load_weights(finished_weights(directory)).expect_partial()
    with tf.io.gfile.GFile(_finished_summary(directory)) as f:
        return dict(json.load(f))


@dataclass
class TrainedMember:
    """One trained Siamese network of the run (the only one unless it is an ensemble)."""

    siamese: keras.Model
    backbone: keras.Model
    record: dict[str, Any]  # final_train_loss, and the classes its batches drew from


@dataclass
class TrainingRun:
    """What every step of `run_fn` shares: its settings, strategy and data."""

    fn_args: tfx.components.FnArgs
    settings: TrainerSettings
    tf_transform_output: tft.TFTransformOutput
    strategy: tf.distribute.Strategy
    batch_size: int  # global: pairs per step over all replicas
    eval_ds: tf.data.Dataset

    @classmethod
    def start(cls, fn_args: tfx.components.FnArgs) -> "TrainingRun":
        settings = TrainerSettings.from_custom_config(fn_args.custom_config)
        tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
        strategy = distribute.choose_strategy()
        batch_size = distribute.global_batch_size(settings.train, strategy.num_replicas_in_sync)
        logging.info("Training with %s, %d replica(s), global batch %d",
                     type(strategy).__name__, strategy.num_replicas_in_sync, batch_size)
        eval_ds = make_dataset(fn_args.eval_files, fn_args.data_accessor, tf_transform_output,
                               batch_size, shuffle=False)
        return cls(fn_args, settings, tf_transform_output, strategy, batch_size, eval_ds)

    def calibrate(self, model: keras.Model) -> dict[str, float]:
        """`calibrate` on the eval split with the run's threshold mode."""
        train = self.settings.train
        return calibrate(model, self.eval_ds, self.fn_args.eval_steps, train.threshold_mode,
                         train.target_false_match_rate)


def fit_member(trainable: keras.Model, train_ds: tf.data.Dataset, steps: int, directory: str,
               model_cfg: ModelConfig, train_cfg: TrainConfig,
               eval_ds: Optional[tf.data.Dataset], index: int = 0, members: int = 1,
               extra_callbacks: Sequence[keras.callbacks.Callback] = (),
               ) -> keras.callbacks.History:
    """Trains one compiled member for `steps` steps (`distribute.fit`: backups in `directory`)
    with the Trainer's callbacks: live progress in the log (`progress.TrainingProgress`, every
    `progress_seconds`) and, on the chief, the training curves."""
    callbacks: list[keras.callbacks.Callback] = [progress.TrainingProgress(
        steps, index + 1, members, train_cfg.progress_seconds)]
    if distribute.is_chief():
        callbacks.append(curves.TrainingCurves(
            directory, train_cfg.curve_every, eval_ds, model_lib.loss_for(model_cfg),
            model_lib.metrics_for(model_cfg)[0]))
    callbacks.extend(extra_callbacks)
    return distribute.fit(trainable, train_ds, steps, directory, train_cfg.checkpoint_steps,
                          callbacks=callbacks, steps_per_execution=train_cfg.steps_per_execution)


def train_member(run: TrainingRun, index: int) -> TrainedMember:
    """Trains ensemble member `index` (seed + index), or restores it when a restarted Trainer
    finds it finished; a single model is member 0 of 1."""
    model_cfg, train_cfg = run.settings.model, run.settings.train
    members, seed = model_cfg.ensemble_members, run.settings.seed + index
    # Each member has its own seed: its initial weights, batches and augmentation differ.
    tf.keras.utils.set_random_seed(seed)
    directory = member_dir(run.fn_args.model_run_dir, index, members)
    resuming = members > 1 and is_finished(directory)
    # A finished member needs no training batches (building them reads the train split).
    train_ds, drawn = (None, {}) if resuming else training_batches(
        run.fn_args, run.tf_transform_output, run.batch_size, model_cfg, train_cfg, seed)
    siamese, backbone, trainable = compile_for_training(
        run.strategy, run.settings.image, model_cfg,
        learning_rate(train_cfg, run.fn_args.train_steps),
        mixed_precision=train_cfg.mixed_precision,
        backbone_name=f"{model_cfg.backbone}_member_{index}" if members > 1 else "",
        steps_per_execution=train_cfg.steps_per_execution, jit_compile=train_cfg.jit_compile)
    record = restore_finished(backbone, directory) if resuming else None
    if record is not None:
        logging.info("Ensemble member %d/%d: finished before, weights restored from %s",
                     index + 1, members, directory)
        return TrainedMember(siamese, backbone, record)
    if members > 1:
        logging.info("Ensemble member %d/%d (seed %d): training %d steps", index + 1, members,
                     seed, run.fn_args.train_steps)
    history = fit_member(trainable, train_ds, run.fn_args.train_steps, directory, model_cfg,
                         train_cfg, run.eval_ds, index, members)
    record = {"final_train_loss": float(history.history["loss"][-1]), **drawn}
    if members > 1:
        save_finished(backbone, directory, record)
    return TrainedMember(siamese, backbone, record)


def served_model(run: TrainingRun, trained: list[TrainedMember]
                 ) -> tuple[keras.Model, keras.Model, dict[str, Any]]:
    """The model to export (the one network, or the members' ensemble), its backbone, and the
    record of the run: the threshold calibrated on the eval split with the metrics at it, the
    recipe, and for an ensemble each member's own calibrated figures."""
    model_cfg = run.settings.model
    if len(trained) == 1:
        siamese, backbone, record = trained[0].siamese, trained[0].backbone, trained[0].record
        member_results = []
    else:
        member_results = []
        for index, member in enumerate(trained):
            metrics = run.calibrate(member.siamese)
            member_results.append({"seed": run.settings.seed + index, **member.record,
                                   **{k: metrics[k] for k in MEMBER_METRICS}})
            logging.info("Ensemble member %d: eval AUC %.4f, EER %.4f", index,
                         metrics["eval_auc"], metrics["eval_eer"])
        with run.strategy.scope():
            siamese, backbone = model_lib.build_ensemble(run.settings.image, model_cfg,
                                                         [m.backbone for m in trained])
        record = {"final_train_loss": float(np.mean([m.record["final_train_loss"]
                                                      for m in trained]))}
    result = run.calibrate(siamese)
    result.update(record)
    result.update(backbone=model_cfg.backbone, head=model_cfg.head, loss=model_cfg.loss,
                  shared_weights=model_cfg.shared_weights,
                  ensemble_members=model_cfg.ensemble_members,
                  ensemble_class_fraction=model_cfg.ensemble_class_fraction)
    if member_results:
        result["members"] = member_results
    logging.info("Calibrated on the eval split (threshold by %s): threshold %.4f, accuracy "
                 "%.4f, precision %.4f, recall %.4f, AUC %.4f, EER %.4f", result["threshold_mode"],
                 result["threshold"], result["eval_accuracy"], result["eval_precision"],
                 result["eval_recall"], result["eval_auc"], result["eval_eer"])
    return siamese, backbone, result


def export_and_record(run: TrainingRun, siamese: keras.Model, backbone: keras.Model,
                      result: dict[str, Any]) -> None:
    """Writes the SavedModel and, on the chief, training_metrics.json. Only the chief writes
    them; the other workers export to a temporary directory (saving may need every worker) and
    delete it."""
    settings, fn_args = run.settings, run.fn_args
    export_dir = distribute.write_dir(fn_args.serving_model_dir)
    export.export_model(siamese, backbone, run.tf_transform_output, result["threshold"],
                        settings.model.margin, export_dir, settings.image, settings.model_name,
                        distance_scale=heads.distance_scale(settings.model.head,
                                                            settings.model.margin),
                        limits=settings.serving_limits)
    distribute.discard(export_dir, fn_args.serving_model_dir)
    distribute.wait_for_chief_export(fn_args.serving_model_dir)
    if distribute.is_chief():
        with tf.io.gfile.GFile(os.path.join(fn_args.model_run_dir, METRICS_FILE), "w") as f:
            f.write(json.dumps(result, indent=1))
        members = run.settings.model.ensemble_members
        describe.write_description(siamese, fn_args.model_run_dir, [
            member_dir(fn_args.model_run_dir, i, members) for i in range(members)])


# TFX Trainer calls this.
def run_fn(fn_args: tfx.components.FnArgs) -> None:
    run = TrainingRun.start(fn_args)
    trained = [train_member(run, i) for i in range(run.settings.model.ensemble_members)]
    siamese, backbone, result = served_model(run, trained)
    export_and_record(run, siamese, backbone, result)
