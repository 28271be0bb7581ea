"""The README's main job on the embedded digits dataset."""

from __future__ import annotations

import dataclasses
import os
import random

from siamese_tfx.components.contract.config import DataConfig, EvalConfig, ImageConfig, TrainConfig
from siamese_tfx.components.pair_example_gen import sampling
from siamese_tfx.pipeline.config import PipelineConfig
from siamese_tfx.pipeline.datasets import write_digits


def demo_config() -> PipelineConfig:
    """Settings for the digits: 7 digits train, 3 are held out as the eval split (seed 0 holds
    out 3, 5 and 6, the hardest trio to tell apart); a few minutes on 2 CPU cores."""
    return PipelineConfig(
        pipeline_name="siamese-tfx-demo",
        model_name="digits",
        data=DataConfig(num_train_pairs=4000, num_eval_pairs=1000, eval_class_fraction=0.3),
        image=ImageConfig(height=24, width=24, channels=1),
        train=TrainConfig(train_steps=1200, batch_size=64, calibration_steps=15),
        eval=EvalConfig(min_accuracy=0.7, min_auc=0.75),
    )


def with_digits(config: PipelineConfig, output_dir: str) -> PipelineConfig:
    """Writes the digits under `output_dir` (unless another image root was chosen)."""
    if config.data.image_root:
        return config
    root = write_digits(os.path.join(output_dir, "data", "digits"))
    return dataclasses.replace(config, data=dataclasses.replace(config.data, image_root=root))


def held_out_pairs(config: PipelineConfig, count: int) -> list[sampling.Pair]:
    """`count` same-digit and `count` different-digit pairs from the eval split's digits,
    which the model never saw in training."""
    root = config.data.image_root
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    _, eval_classes = sampling.split_classes(classes, config.data.eval_class_fraction,
                                             config.data.seed)
    images = {c: sorted(os.path.join(c, f) for f in os.listdir(os.path.join(root, c)))
              for c in eval_classes}
    rng = random.Random(1234)
    pairs = []
    for _ in range(count):
        c = rng.choice(eval_classes)
        a, b = rng.sample(images[c], 2)
        pairs.append(sampling.Pair(a, b, 1, c, c))
    for _ in range(count):
        ca, cb = rng.sample(eval_classes, 2)
        pairs.append(sampling.Pair(rng.choice(images[ca]), rng.choice(images[cb]), 0, ca, cb))
    return pairs


def query_pushed_model(config: PipelineConfig, pushed_path: str, count: int) -> int:
    """Serves the pushed model over gRPC on 127.0.0.1 (TF Serving's API), compares held-out
    digit pairs through the client, prints the answers and stops the server. Returns 0 when
    the server answered every query (how many pairs were judged right is reported: it is
    the model's quality, measured, not a failure of the job)."""
    from siamese_tfx.serving.client import SiameseClient
    from siamese_tfx.serving.config import ServerConfig
    from siamese_tfx.serving.server import start_server

    pairs = held_out_pairs(config, count)
    root = config.data.image_root

    def read(path: str) -> bytes:
        with open(os.path.join(root, path), "rb") as f:
            return f.read()

    server = start_server(
        ServerConfig(model_base=config.serving_dir, model_name=config.model_name, port=0)
    )
    try:
        print(f"\nServing {config.serving_dir}/{config.model_name} over gRPC at "
              f"{server.address}; comparing digits the model never saw in training:")
        client = SiameseClient(server.address, config.model_name, timeout=30.0)
        answers = client.compare_many([(read(p.left), read(p.right)) for p in pairs])
        version = client.last_version
    finally:
        server.stop()
    right = 0
    for p, answer in zip(pairs, answers):
        ok = answer.match == bool(p.label)
        right += ok
        print(f"  {p.left:>12} vs {p.right:<12} distance={answer.distance:.3f} "
              f"similarity={answer.similarity:.3f} {'match   ' if answer.match else 'no match'}"
              f" ({'right' if ok else 'WRONG'})")
    print(f"{right}/{len(pairs)} pairs judged right by version {version} "
          f"(pushed to {pushed_path}). Server stopped.")
    return 0 if len(answers) == len(pairs) else 4
