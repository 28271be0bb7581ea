"""Trainer throughput: the project's training loop against a bare step and a keras-io-style loop,
in ONE run, on the same model, data shape and batch (32x32x1, 64 pairs = 128 images a step,
Adam).

    .venv/bin/python bench/trainer_throughput.py [--steps 600] [--backbone conv4] [--breakdown]

1. bare: a `tf.function` step on one stacked 128-image class batch (the backbone once, the
   semi-hard triplet loss, Adam): no input pipeline, no Keras loop. The baseline.
2. keras-io: numpy pairs of real images, the tower called on left and right, the contrastive
   loss, `model.fit` (keras-io's siamese_contrastive example).
3. project: the Trainer's own loop (`train.compile_for_training` + `train.fit_member`, the code
   `run_fn` runs, with all its callbacks: progress, curves with their eval batches, backups,
   TensorBoard) at the Omniglot recipe's settings (bench/quality.py): triplet loss on class
   batches of 32 characters x 4 images with rotation classes, affine augmentation, cosine
   learning rate, embedding 128, margin 0.5, curve points every steps/20 (quality.CURVE_POINTS).

ms/step is the steady state: the wall time from the end of the first step (which traces) to the
end of the last, over steps - 1; the first step's time is printed apart. `--breakdown` also times
the project loop's parts: its input pipeline alone, its compiled step on one fixed batch without
callbacks, and the same without the metric.

Data: the Omniglot small background sets in ../shared/data (242 characters x 20 drawings),
resized to 32x32 greyscale.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
import zipfile
from typing import Any

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.environ.get("SIAMESE_TFX_SHARED_DATA",
                             os.path.join(REPO, "..", "shared", "data"))
OMNIGLOT_ZIPS = [os.path.join(SHARED_DATA, "omniglot", f"images_background_small{i}.zip")
                 for i in (1, 2)]
SIZE = 32
PAIRS = 64  # pairs a step: 128 images


def load_omniglot(size: int = SIZE) -> tuple[Any, Any]:
    """(images [N, size, size, 1] float32 in [0, 1], class ids [N]): every character of both
    small sets once (Greek and Latin are in both)."""
    import numpy as np
    from PIL import Image

    by_character: dict[str, list[Any]] = {}
    for path in OMNIGLOT_ZIPS:
        with zipfile.ZipFile(path) as archive:
            for name in sorted(archive.namelist()):
                parts = name.split("/")
                if not name.endswith(".png") or len(parts) < 4:
                    continue
                character = "/".join(parts[-3:-1])
                drawing = parts[-1]
                drawings = by_character.setdefault(character, [])
                if any(d == drawing for d, _ in drawings):
                    continue
                image = Image.open(io.BytesIO(archive.read(name))).convert("L").resize(
                    (size, size), Image.BILINEAR)
                drawings.append((drawing, np.asarray(image, np.float32) / 255.0))
    images, classes = [], []
    for c, character in enumerate(sorted(by_character)):
        for _, pixels in by_character[character]:
            images.append(pixels[..., None])
            classes.append(c)
    return np.stack(images), np.array(classes, np.int64)


class StepClock:
    """Times a Keras fit: the end of the first step and of the last (tensor logs: no sync)."""

    def __init__(self) -> None:
        import tensorflow as tf

        class _Clock(tf.keras.callbacks.Callback):
            def __init__(inner) -> None:
                super().__init__()
                inner._supports_tf_logs = True

            def on_train_begin(inner, logs: Any = None) -> None:
                self.begin = time.perf_counter()

            def on_train_batch_end(inner, batch: int, logs: Any = None) -> None:
                now = time.perf_counter()
                # Steps done over all epochs (batch restarts at 0 in each epoch).
                self.done += batch + 1 - self._in_epoch if batch + 1 > self._in_epoch \
                    else batch + 1
                self._in_epoch = batch + 1
                if self.first is None:
                    self.first, self.first_step = now, self.done
                self.last, self.last_step = now, self.done

        self.callback = _Clock()
        self.begin = self.first = self.last = None
        self.first_step = self.last_step = self.done = self._in_epoch = 0

    def figures(self) -> tuple[float, float]:
        """(steady ms/step, seconds to the end of the first step)."""
        steps = self.last_step - self.first_step
        return 1000 * (self.last - self.first) / max(steps, 1), self.first - self.begin


def bare_step(images: Any, classes: Any, model_cfg: Any, image: Any, steps: int) -> tuple:
    import tensorflow as tf

    from siamese_tfx.components.trainer import backbones, class_batches, losses

    batch, ids = next(iter(class_batches.class_batch_dataset(images, classes, PAIRS, 32,
                                                              rotations=True)))
    keys = sorted(batch)
    stacked = tf.concat([batch[keys[0]], batch[keys[1]]], 0)
    stacked_ids = tf.concat([ids[:, 0], ids[:, 1]], 0)
    backbone = backbones.build_backbone(image, model_cfg)
    optimizer = tf.keras.optimizers.Adam(1e-3)

    @tf.function
    def step(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            loss = losses.semi_hard_triplet_loss(y, backbone(x, training=True),
                                                 model_cfg.margin)
        grads = tape.gradient(loss, backbone.trainable_variables)
        optimizer.apply_gradients(zip(grads, backbone.trainable_variables))
        return loss

    start = time.perf_counter()
    step(stacked, stacked_ids).numpy()
    first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps - 1):
        loss = step(stacked, stacked_ids)
    loss.numpy()
    return 1000 * (time.perf_counter() - start) / (steps - 1), first


def keras_io_loop(images: Any, classes: Any, model_cfg: Any, image: Any, steps: int) -> tuple:
    import numpy as np
    import tensorflow as tf

    from siamese_tfx.components.trainer import backbones, layers, losses

    rng = np.random.default_rng(0)
    count = PAIRS * 50
    left_index = rng.integers(0, len(images), count)
    same = np.arange(count) % 2 == 0
    right_index = np.where(same, [rng.choice(np.flatnonzero(classes == classes[i]))
                                  for i in left_index], rng.integers(0, len(images), count))
    labels = (classes[left_index] == classes[right_index]).astype(np.float32)
    shape = (image.height, image.width, image.channels)
    left_in, right_in = tf.keras.Input(shape), tf.keras.Input(shape)
    tower = backbones.build_backbone(image, model_cfg)
    distance = layers.EuclideanDistance()([tower(left_in), tower(right_in)])
    model = tf.keras.Model([left_in, right_in], distance)
    model.compile(optimizer=tf.keras.optimizers.Adam(1e-3),
                  loss=losses.ContrastiveLoss(model_cfg.margin))
    clock = StepClock()
    model.fit([images[left_index], images[right_index]], labels, batch_size=PAIRS,
              epochs=max(1, steps // 50), verbose=0, callbacks=[clock.callback])
    return clock.figures()


def project_loop(images: Any, classes: Any, model_cfg: Any, train_cfg: Any, image: Any,
                 steps: int, work: str) -> tuple:
    import tensorflow as tf

    from siamese_tfx.components.trainer import class_batches, train

    train_ds = train.augmented(class_batches.class_batch_dataset(
        images, classes, PAIRS, train_cfg.classes_per_batch,
        rotations=train_cfg.rotation_classes), train_cfg)
    eval_ds = eval_pairs(images, classes)
    _, _, trainable = train.compile_for_training(
        tf.distribute.get_strategy(), image, model_cfg, train.learning_rate(train_cfg, steps),
        steps_per_execution=train_cfg.steps_per_execution, jit_compile=train_cfg.jit_compile)
    clock = StepClock()
    train.fit_member(trainable, train_ds, steps, work, model_cfg, train_cfg, eval_ds,
                     extra_callbacks=[clock.callback])
    return clock.figures(), train_ds, trainable


def eval_pairs(images: Any, classes: Any) -> Any:
    """Labelled pairs (half same) of real images, as the eval split hands them over."""
    import numpy as np
    import tensorflow as tf

    from siamese_tfx.components.contract import features

    rng = np.random.default_rng(1)
    count = PAIRS * 4
    left = rng.integers(0, len(images), count)
    right = np.where(np.arange(count) % 2 == 0,
                     [rng.choice(np.flatnonzero(classes == classes[i])) for i in left],
                     rng.integers(0, len(images), count))
    left_key, right_key = (features.transformed_name(k) for k in features.IMAGE_KEYS)
    x = {left_key: images[left], right_key: images[right]}
    y = (classes[left] == classes[right]).astype(np.int64)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(PAIRS)


def breakdown(train_ds: Any, trainable: Any, model_cfg: Any, steps: int) -> dict[str, float]:
    """ms/step of the project loop's parts: the input pipeline alone, its compiled step on one
    fixed batch (no input, no callbacks), and that step without the metric."""
    import tensorflow as tf

    from siamese_tfx.components.trainer import model as model_lib

    result = {}
    iterator = iter(train_ds)
    next(iterator)
    start = time.perf_counter()
    for _ in range(steps):
        batch = next(iterator)
    result["input pipeline alone"] = 1000 * (time.perf_counter() - start) / steps
    fixed = tf.data.Dataset.from_tensors(batch).repeat()
    trainable._training_state = None  # BackupAndRestore removed it after the project's fit.
    for name, metrics in (("compiled step, fixed batch, no callbacks", True),
                          ("the same without the metric", False)):
        trainable.compile(optimizer=tf.keras.optimizers.Adam(1e-3),
                          loss=model_lib.loss_for(model_cfg),
                          metrics=model_lib.metrics_for(model_cfg) if metrics else None)
        clock = StepClock()
        trainable.fit(fixed, steps_per_epoch=steps, epochs=1, verbose=0,
                      callbacks=[clock.callback])
        result[name] = clock.figures()[0]
    return result


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=600, help="Steps of each loop.")
    parser.add_argument("--backbone", default="conv4",
                        help="conv4, or a keras.applications backbone (e.g. mobilenet_v2).")
    parser.add_argument("--loops", default="bare,keras-io,project",
                        help="Which loops to run, comma-separated.")
    parser.add_argument("--steps-per-execution", type=int, default=1,
                        help="The project loop's TrainConfig.steps_per_execution.")
    parser.add_argument("--jit-compile", action="store_true",
                        help="The project loop with XLA (TrainConfig.jit_compile).")
    parser.add_argument("--breakdown", action="store_true",
                        help="Also time the project loop's parts (input, step, metric).")
    args = parser.parse_args(argv)
    for path in OMNIGLOT_ZIPS:
        if not os.path.exists(path):
            print(f"Omniglot not found: {path} (set SIAMESE_TFX_SHARED_DATA)", file=sys.stderr)
            return 2
    wall = time.perf_counter()
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import quality  # the recipe's settings (stdlib only at import)
    from siamese_tfx.components.contract.config import ImageConfig, ModelConfig, TrainConfig

    image = ImageConfig(height=SIZE, width=SIZE, channels=1)
    model_cfg = ModelConfig(backbone=args.backbone, head="euclidean", loss="triplet",
                            embedding_dim=128, margin=0.5)
    train_cfg = TrainConfig(train_steps=args.steps, batch_size=PAIRS, learning_rate=1e-3,
                            lr_schedule="cosine", classes_per_batch=32, rotation_classes=True,
                            augment=True, curve_every=max(1, args.steps // quality.CURVE_POINTS),
                            steps_per_execution=args.steps_per_execution,
                            jit_compile=args.jit_compile)
    images, classes = load_omniglot()
    print(f"Omniglot: {len(images)} images of {classes.max() + 1} characters, {SIZE}x{SIZE}; "
          f"backbone {args.backbone}, {PAIRS} pairs a step, {args.steps} steps; "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    loops = args.loops.split(",")
    figures: dict[str, tuple[float, float]] = {}
    # The bare step runs half its steps first and half last, around the other loops: the
    # machine's speed drifts by several percent over minutes (other tenants on the host), so a
    # baseline measured only at the start would misstate the ratios; both halves are printed.
    bare_halves: list[tuple[float, float]] = []
    if "bare" in loops:
        bare_halves.append(bare_step(images, classes, model_cfg, image, args.steps // 2 + 1))
        print(f"bare (first half): {bare_halves[0][0]:.1f} ms/step", flush=True)
    if "keras-io" in loops:
        figures["keras-io"] = keras_io_loop(images, classes, model_cfg, image, args.steps)
        print(f"keras-io: {figures['keras-io'][0]:.1f} ms/step", flush=True)
    parts = {}
    if "project" in loops:
        with tempfile.TemporaryDirectory(prefix="trainer-throughput-") as work:
            figures["project"], train_ds, trainable = project_loop(
                images, classes, model_cfg, train_cfg, image, args.steps, work)
            print(f"project: {figures['project'][0]:.1f} ms/step", flush=True)
            if args.breakdown:
                parts = breakdown(train_ds, trainable, model_cfg, min(args.steps, 300))
    if "bare" in loops:
        bare_halves.append(bare_step(images, classes, model_cfg, image,
                                     args.steps - args.steps // 2 + 1))
        print(f"bare (second half): {bare_halves[1][0]:.1f} ms/step", flush=True)
        figures = {"bare": ((bare_halves[0][0] + bare_halves[1][0]) / 2, bare_halves[0][1]),
                   **figures}
    base = figures.get("bare", (0.0, 0.0))[0]
    print(f"\n{args.backbone}, {args.steps} steps, steps_per_execution "
          f"{args.steps_per_execution}, jit_compile {args.jit_compile}:")
    for name, (ms, first) in figures.items():
        ratio = f"{ms / base:.2f}x bare" if base else ""
        print(f"  {name:9s} {ms:7.1f} ms/step  {ratio:11s} (first step {first:.1f} s)")
    if bare_halves:
        print(f"  (bare: {bare_halves[0][0]:.1f} ms/step before the other loops, "
              f"{bare_halves[1][0]:.1f} after; the baseline is their mean)")
    for name, ms in parts.items():
        print(f"  breakdown: {name}: {ms:.1f} ms/step")
    print(f"wall time {time.perf_counter() - wall:.0f} s; load average (1, 5, 15 min) "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
