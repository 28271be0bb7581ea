"""The Trainer's live progress: a 300-step training logs step/total, loss, steps/s and an ETA
every `progress_seconds` (here 0.2 s, so the test is fast), naming the ensemble member."""

import logging
import re

import numpy as np
import tensorflow as tf

from siamese_tfx.components.contract import features
from siamese_tfx.components.contract.config import ImageConfig, ModelConfig, TrainConfig
from siamese_tfx.components.trainer import progress, train

IMAGE = ImageConfig(height=16, width=16, channels=1)
LINE = re.compile(r"Training member 2/3: step (\d+)/300 \(\d+%\), loss [0-9.]+, "
                  r"[0-9.]+ steps/s, ETA \d+(m\d\ds|s)")


def _pairs(count: int = 64) -> tf.data.Dataset:
    rng = np.random.default_rng(0)
    x = {features.transformed_name(k): rng.uniform(size=(count, 16, 16, 1)).astype(np.float32)
         for k in features.IMAGE_KEYS}
    return tf.data.Dataset.from_tensor_slices((x, np.arange(count) % 2)).repeat().batch(8)


def test_a_300_step_training_logs_progress_lines_with_an_eta(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    # absl's logger keeps its own level (TFX's flag parsing in an earlier test of this process
    # sets it to WARNING): the progress lines are absl INFO records.
    caplog.set_level(logging.INFO, logger="absl")
    model_cfg = ModelConfig(embedding_dim=8)
    train_cfg = TrainConfig(train_steps=300, batch_size=8, progress_seconds=0.2,
                            checkpoint_steps=1000, curve_every=1000)
    _, _, trainable = train.compile_for_training(tf.distribute.get_strategy(), IMAGE, model_cfg,
                                                 1e-3)
    train.fit_member(trainable, _pairs(), 300, str(tmp_path), model_cfg, train_cfg,
                     eval_ds=_pairs().take(1), index=1, members=3)
    messages = [r.getMessage() for r in caplog.records]
    steps = [int(m.group(1)) for m in map(LINE.search, messages) if m]
    assert len(steps) >= 3, messages
    assert steps == sorted(steps) and steps[-1] <= 300
    assert any(re.search(r"Training member 2/3: 300/300 steps done, loss [0-9.]+", m)
               for m in messages)


def test_progress_lines_are_timed_by_the_clock_not_by_steps():
    now = [0.0]
    callback = progress.TrainingProgress(100, every_seconds=10.0, clock=lambda: now[0])
    callback.on_train_begin()
    for step in range(100):
        now[0] = step * 0.5  # 2 steps/s: a line every 10 s = every 20 steps
        callback.on_train_batch_end(step, {"loss": tf.constant(0.5)})
    assert callback.lines == 4  # at 10, 20, 30 and 40 s (steps 21, 41, 61, 81)
    assert progress.duration(403) == "6m43s" and progress.duration(3720) == "1h02m"
