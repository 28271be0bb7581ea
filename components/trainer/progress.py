"""Live training progress in the Trainer's log: every `TrainConfig.progress_seconds` a line
naming the ensemble member, step/total, the loss (Keras' running mean over the member's steps),
steps/s and the time left, e.g.

    Training member 2/3: step 1200/6000 (20%), loss 0.0841, 11.9 steps/s, ETA 6m43s

The callback is cheap: it takes the loss as the tensor Keras already has (`_supports_tf_logs`,
so Keras converts nothing per step for it) and does one clock read per step; the loss is read
only when a line is due.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional

import tensorflow as tf
from absl import logging

keras = tf.keras


def duration(seconds: float) -> str:
    """`seconds` as 1h02m, 6m43s or 42s."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class TrainingProgress(keras.callbacks.Callback):
    """Logs a progress line every `every_seconds` of training (and one when it ends).

    Args:
        total_steps: the steps this member trains (`train_steps`).
        member, members: this member's number (1-based) and the ensemble's size.
        every_seconds: seconds between lines.
        clock: the time source (seconds, monotonic).
    """

    def __init__(self, total_steps: int, member: int = 1, members: int = 1,
                 every_seconds: float = 10.0,
                 clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self._supports_tf_logs = True  # Keras hands the logs over as tensors: no per-step sync.
        self.total_steps, self.every = int(total_steps), float(every_seconds)
        self.name = f"member {member}/{members}" if members > 1 else "the model"
        self._clock = clock
        self._first: Optional[tuple[int, float]] = None  # the first finished step, and when
        self._next_line = 0.0
        self._step = 0
        self._loss: Any = None
        self.lines = 0

    def on_train_begin(self, logs: Optional[dict[str, Any]] = None) -> None:
        self._first, self._step, self.lines = None, 0, 0
        logging.info("Training %s: %d steps", self.name, self.total_steps)

    def on_train_batch_end(self, batch: int, logs: Optional[dict[str, Any]] = None) -> None:
        now = self._clock()
        self._step = batch + 1
        if logs:
            self._loss = logs.get("loss")
        if self._first is None:  # The first step includes tracing: rates start after it.
            self._first = (self._step, now)
            self._next_line = now + self.every
            return
        if now < self._next_line:
            return
        self._next_line = now + self.every
        self._log_line(now)

    def _rate(self, now: float) -> float:
        first_step, first_time = self._first or (0, now)
        elapsed = now - first_time
        return (self._step - first_step) / elapsed if elapsed > 0 else 0.0

    def _loss_text(self) -> str:
        return "" if self._loss is None else f", loss {float(self._loss):.4f}"

    def _log_line(self, now: float) -> None:
        rate = self._rate(now)
        left = self.total_steps - self._step
        eta = duration(left / rate) if rate > 0 else "unknown"
        logging.info("Training %s: step %d/%d (%d%%)%s, %.1f steps/s, ETA %s", self.name,
                     self._step, self.total_steps, 100 * self._step // max(self.total_steps, 1),
                     self._loss_text(), rate, eta)
        self.lines += 1

    def on_train_end(self, logs: Optional[dict[str, Any]] = None) -> None:
        now = self._clock()
        logging.info("Training %s: %d/%d steps done%s, %.1f steps/s", self.name, self._step,
                     self.total_steps, self._loss_text(), self._rate(now))
