"""Distributed training for the Trainer: strategy, batch size, precision, checkpoints, export.

- Strategy: MultiWorkerMirroredStrategy when TF_CONFIG names several workers (each worker uses
  all its GPUs), MirroredStrategy across the GPUs of one machine, else the default strategy.
- Batch size: `TrainConfig.batch_size` is the GLOBAL batch (pairs per step over all replicas),
  split evenly across replicas, so a run's optimisation does not depend on the hardware. With
  `per_replica_batch_size > 0`, the global batch is instead that × the replicas in sync (GPUs ×
  workers): more GPUs then mean bigger steps. Either way a step consumes one global batch and
  `train_steps` counts global steps; the learning rate is not rescaled.
- Mixed precision (`mixed_precision`): float16 compute with float32 variables; the model's
  outputs are cast back to float32, so the loss (ContrastiveLoss casts to float32 too), the
  threshold calibration and the serving signatures stay float32. Keras wraps the optimizer in a
  LossScaleOptimizer.
- Preemption: `tf.keras.callbacks.BackupAndRestore` in `<model_run_dir>/backup` (shared storage:
  every worker sees it) saves every `checkpoint_steps` steps; a restarted worker (and, under
  MultiWorkerMirroredStrategy, its restarted peers) resume from the last backup, mid-epoch.
- Export: only the chief writes the SavedModel and the run's files; the other workers export to
  a temporary directory they delete, since saving may need every worker's participation. A
  worker then waits for the chief's SavedModel: TFX's Trainer executor fails every task whose
  serving model directory is missing when `run_fn` returns, and a worker can get there first.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from typing import Any, Iterator, Sequence

import tensorflow as tf

from siamese_tfx.components.contract.config import ImageConfig, ModelConfig, TrainConfig
from siamese_tfx.components.trainer import model as model_lib

keras = tf.keras

BACKUP_SUBDIR = "backup"
CHIEF_EXPORT_TIMEOUT_SECONDS = 600.0


def _tf_config() -> dict[str, Any]:
    return json.loads(os.environ.get("TF_CONFIG") or "{}")


def num_workers() -> int:
    cluster = _tf_config().get("cluster", {})
    return sum(len(cluster.get(k, [])) for k in ("chief", "worker")) or 1


def choose_strategy() -> tf.distribute.Strategy:
    """MultiWorkerMirrored when TF_CONFIG names several workers, Mirrored on several GPUs,
    else the default strategy."""
    if num_workers() > 1:
        return tf.distribute.MultiWorkerMirroredStrategy()
    if len(tf.config.list_logical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def is_chief() -> bool:
    """The task that writes the SavedModel: 'chief', else worker 0, else a lone process."""
    config = _tf_config()
    task = config.get("task", {})
    if not task:
        return True
    if task.get("type") == "chief":
        return True
    has_chief = bool(config.get("cluster", {}).get("chief"))
    return task.get("type") == "worker" and task.get("index", 0) == 0 and not has_chief


def global_batch_size(train: TrainConfig, replicas: int) -> int:
    """Pairs per step over all replicas (see the module doc for the convention)."""
    if train.per_replica_batch_size > 0:
        return train.per_replica_batch_size * replicas
    batch = train.batch_size
    if batch % replicas:
        raise ValueError(f"batch_size {batch} (the global batch) does not split evenly across "
                         f"{replicas} replicas; use a multiple of {replicas} or set "
                         "per_replica_batch_size")
    return batch


def for_strategy(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Shards by example across workers: the Trainer's input is a few files (often one per
    split), fewer than the workers, so file sharding would starve some of them."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


@contextlib.contextmanager
def precision(mixed: bool) -> Iterator[None]:
    """Builds layers under 'mixed_float16' when `mixed`, restoring the previous policy after."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else previous)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _float32_output(model: keras.Model, name: str) -> keras.Model:
    output = keras.layers.Activation("linear", dtype="float32", name=name)(model.outputs[0])
    return keras.Model(model.inputs, output, name=model.name)


def build_model(image: ImageConfig, model: ModelConfig, mixed_precision: bool = False,
                backbone_name: str = "") -> tuple[keras.Model, keras.Model]:
    """`model_lib.build_siamese`, optionally with float16 compute and float32 outputs.
    Call it inside `strategy.scope()`."""
    if not mixed_precision:
        return model_lib.build_siamese(image, model, backbone_name=backbone_name)
    with precision(True):  # The outer models too: Keras picks the loss scaling from them.
        siamese, backbone = model_lib.build_siamese(image, model, backbone_name=backbone_name)
        return _float32_output(siamese, "distance_float32"), _float32_output(
            backbone, "embedding_float32")


def skip_autograph_of_tf_keras() -> None:
    """Has AutoGraph leave the tf_keras package's own code unconverted, as TensorFlow's rules
    already do for the `keras` package it was renamed from (tf_keras is Keras 2, written to run
    unconverted; the project's layers and losses are still converted). Without it the first
    trace of the training function converts the whole of Keras: about 25 s of every Trainer
    process on 2 cores. Idempotent; changes a process-wide TensorFlow setting."""
    from tensorflow.python.autograph.core import config as autograph_config

    rules = tuple(autograph_config.CONVERSION_RULES)
    skip = autograph_config.DoNotConvert("tf_keras")
    if str(skip) not in {str(r) for r in rules}:
        autograph_config.CONVERSION_RULES = (skip,) + rules


def fit(
    siamese: keras.Model, dataset: tf.data.Dataset, steps: int, model_run_dir: str,
    checkpoint_every: int, callbacks: Sequence[keras.callbacks.Callback] = (),
    steps_per_execution: int = 1,
) -> keras.callbacks.History:
    """`steps` global steps as one epoch, backed up every `checkpoint_every` steps; a restarted
    run resumes from the last backup. `steps_per_execution`: what `siamese` was compiled with."""
    skip_autograph_of_tf_keras()
    return siamese.fit(
        # verbose=0: Keras' own epoch line would print after the fact on the terminal; the
        # Trainer's progress callback (progress.py) reports while it trains.
        for_strategy(dataset), steps_per_epoch=steps, epochs=1, verbose=0,
        callbacks=training_callbacks(model_run_dir, checkpoint_every, steps_per_execution)
        + list(callbacks))


def training_callbacks(model_run_dir: str, checkpoint_steps: int,
                       steps_per_execution: int = 1) -> list[keras.callbacks.Callback]:
    """Backup (every worker: under MultiWorkerMirroredStrategy Keras has the non-chief workers
    write to temporary copies) and, on the chief only, TensorBoard logs. Keras counts the
    backup's `save_freq` in calls of the training function, `steps_per_execution` steps each."""
    callbacks: list[keras.callbacks.Callback] = [keras.callbacks.BackupAndRestore(
        backup_dir=os.path.join(model_run_dir, BACKUP_SUBDIR),
        save_freq=max(1, checkpoint_steps // steps_per_execution), delete_checkpoint=True)]
    if is_chief():
        callbacks.append(keras.callbacks.TensorBoard(log_dir=model_run_dir))
    return callbacks


def write_dir(path: str) -> str:
    """`path` on the chief; a fresh temporary directory on the other workers."""
    if is_chief():
        return path
    task = _tf_config().get("task", {})
    return os.path.join(tempfile.mkdtemp(prefix="siamese-export-"),
                        f"{task.get('type', 'worker')}-{task.get('index', 0)}")


def discard(written: str, path: str) -> None:
    """Removes a non-chief worker's temporary export (`written` differs from `path`)."""
    if written != path:
        shutil.rmtree(os.path.dirname(written), ignore_errors=True)


def wait_for_chief_export(serving_model_dir: str,
                          timeout: float = CHIEF_EXPORT_TIMEOUT_SECONDS,
                          poll_seconds: float = 1.0) -> None:
    """On a non-chief worker: waits until the chief's SavedModel is in `serving_model_dir`
    (shared storage), so TFX's check that run_fn wrote the model passes on this task too. The
    chief (or a lone process) returns at once."""
    if is_chief():
        return
    target = os.path.join(serving_model_dir, tf.saved_model.SAVED_MODEL_FILENAME_PB)
    deadline = time.monotonic() + timeout
    while not tf.io.gfile.exists(target):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the chief did not write {target} within {timeout:.0f}s")
        time.sleep(poll_seconds)
