"""Training curves: loss and pair accuracy on the training batches and on a few eval batches,
every `every` steps, as TensorBoard scalars (`<model_run_dir>/curves/`) and, at the end of
training, a PNG (`<model_run_dir>/training_curves.png`)."""

from __future__ import annotations

import os
from typing import Any, Optional

import numpy as np
import tensorflow as tf

from siamese_tfx.components.trainer import plots

keras = tf.keras

PNG_FILE = "training_curves.png"
TENSORBOARD_SUBDIR = "curves"


class TrainingCurves(keras.callbacks.Callback):
    """Records the curves during `fit` (one epoch of many steps: Keras logs running means over
    the epoch, so each point here is the mean over its own window of steps)."""

    def __init__(self, model_run_dir: str, every: int, eval_dataset: Optional[tf.data.Dataset],
                 loss: keras.losses.Loss, metric: keras.metrics.Metric, eval_batches: int = 4):
        super().__init__()
        self._supports_tf_logs = True  # Keras hands over its tensor logs: no per-step sync.
        self.model_run_dir, self.every = model_run_dir, max(int(every), 1)
        self._next_point = self.every
        self._predict: Any = None
        self.eval_batches = list(eval_dataset.take(eval_batches)) if eval_dataset else []
        self.loss, self.metric = loss, metric
        self.points: dict[str, list[tuple[int, float]]] = {}
        self._previous: dict[str, tuple[int, float]] = {}
        self._writer = tf.summary.create_file_writer(
            os.path.join(model_run_dir, TENSORBOARD_SUBDIR))

    def _record(self, name: str, step: int, value: float) -> None:
        self.points.setdefault(name, []).append((step, float(value)))
        with self._writer.as_default():
            tf.summary.scalar(name, value, step=step)

    def _evaluate(self) -> dict[str, float]:
        losses = []
        self.metric.reset_state()
        if self._predict is None:  # Traced once: an eager call costs more than the step.
            self._predict = tf.function(lambda x: self.model(x, training=False))
        for batch_features, labels in self.eval_batches:
            predictions = self._predict(batch_features)
            losses.append(float(self.loss(labels, predictions)))
            self.metric.update_state(labels, predictions)
        return {"loss": float(np.mean(losses)), "accuracy": float(self.metric.result())}

    def on_train_batch_end(self, batch: int, logs: Optional[dict[str, Any]] = None) -> None:
        step = batch + 1  # With steps_per_execution > 1, Keras calls this every so many steps.
        if step < self._next_point or not logs:
            return
        self._next_point = (step // self.every + 1) * self.every
        for key, name in (("loss", "train/loss"), ("pair_accuracy", "train/pair_accuracy")):
            if key not in logs:
                continue
            mean = float(logs[key])
            last_step, last_mean = self._previous.get(key, (0, 0.0))
            window = (mean * step - last_mean * last_step) / (step - last_step)
            self._previous[key] = (step, mean)
            self._record(name, step, window)
        if self.eval_batches:
            result = self._evaluate()
            self._record("eval/loss", step, result["loss"])
            self._record("eval/pair_accuracy", step, result["accuracy"])

    def on_train_end(self, logs: Optional[dict[str, Any]] = None) -> None:
        self._writer.flush()
        if not self.points:
            return
        panels = []
        for quantity in ("loss", "pair_accuracy"):
            series = {name.split("/")[0]: tuple(zip(*values))
                      for name, values in sorted(self.points.items())
                      if name.endswith("/" + quantity)}
            if series:
                panels.append({"title": f"{quantity} (train: mean over the last {self.every} "
                               "steps; eval: a few eval batches)", "xlabel": "step",
                               "ylabel": quantity, "series": series})
        plots.line_charts(os.path.join(self.model_run_dir, PNG_FILE), panels)
