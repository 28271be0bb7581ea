"""One worker of a MultiWorkerMirroredStrategy job (its TF_CONFIG names the cluster).

Trains the real Siamese model and loss through the Trainer's own helpers (`distribute.fit`:
BackupAndRestore every --checkpoint-steps steps in <workdir>/run/backup) on a small synthetic
set, then exports like `run_fn`: the chief to <workdir>/serving_model, the other workers to a
temporary directory they delete. Progress goes to <workdir>/progress-<task>.jsonl, one JSON
object a line: the step training starts from (after any restore), each finished step, the end.
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from distributed_fixtures import compile_siamese  # noqa: E402

from siamese_tfx.components.contract import features  # noqa: E402
from siamese_tfx.components.contract.config import ImageConfig, ModelConfig, TrainConfig  # noqa: E402
from siamese_tfx.components.trainer import distribute  # noqa: E402

IMAGE = ImageConfig(height=16, width=16, channels=1)
MODEL = ModelConfig(embedding_dim=8)


class Progress(tf.keras.callbacks.Callback):
    """Appends this worker's progress to its JSON-lines file (and paces the steps)."""

    def __init__(self, path: str, step_seconds: float):
        super().__init__()
        self._path, self._step_seconds, self._started = path, step_seconds, False

    def _write(self, **event) -> None:
        with open(self._path, "a") as f:
            f.write(json.dumps(event) + "\n")

    def on_train_batch_begin(self, batch, logs=None):
        if not self._started:
            self._started = True
            self._write(event="start", step=int(batch),
                        iterations=int(self.model.optimizer.iterations.numpy()))

    def on_train_batch_end(self, batch, logs=None):
        self._write(event="step", step=int(batch) + 1)
        time.sleep(self._step_seconds)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--checkpoint-steps", type=int, required=True)
    parser.add_argument("--step-seconds", type=float, default=0.0)
    args = parser.parse_args()
    task = json.loads(os.environ["TF_CONFIG"])["task"]
    name = f"{task['type']}-{task['index']}"
    progress = Progress(os.path.join(args.workdir, f"progress-{name}.jsonl"), args.step_seconds)

    strategy = distribute.choose_strategy()
    size = distribute.global_batch_size(TrainConfig(batch_size=8),
                                        strategy.num_replicas_in_sync)
    rng = np.random.default_rng(0)
    x = {features.transformed_name(k): rng.uniform(size=(64, 16, 16, 1)).astype(np.float32)
         for k in features.IMAGE_KEYS}
    y = np.array([1, 0] * 32, dtype=np.int64)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(size)
    tf.keras.utils.set_random_seed(0)
    siamese, _ = compile_siamese(strategy, IMAGE, MODEL, learning_rate=1e-3)
    history = distribute.fit(siamese, dataset, args.steps, os.path.join(args.workdir, "run"),
                             args.checkpoint_steps, callbacks=[progress])

    target = os.path.join(args.workdir, "serving_model")
    export_dir = distribute.write_dir(target)
    siamese.save(export_dir, save_format="tf")
    distribute.discard(export_dir, target)
    progress._write(event="done", strategy=type(strategy).__name__,
                    replicas=strategy.num_replicas_in_sync, global_batch=size,
                    iterations=int(siamese.optimizer.iterations.numpy()),
                    loss=float(history.history["loss"][-1]), chief=distribute.is_chief(),
                    export_dir=export_dir, export_dir_left=os.path.exists(export_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
