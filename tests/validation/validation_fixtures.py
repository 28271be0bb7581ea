"""Data validation test helpers: hand-written example spans in PairExampleGen's format, and the
pipeline's own validation nodes run on them with LocalDagRunner (real StatisticsGen,
ImportSchemaGen, ExampleValidator and gate)."""

from __future__ import annotations

import io
import os
import random
from typing import Optional, Sequence

import tensorflow as tf
from PIL import Image, ImageDraw
from tfx import v1 as tfx

from siamese_tfx.components.contract.config import ImageConfig, ValidationConfig, section_to_dict
from siamese_tfx.pipeline import local_runner
from siamese_tfx.pipeline import pipeline as pipeline_lib
from siamese_tfx.pipeline import summary as summary_lib


def png_bytes(width: int, height: int, seed: int) -> bytes:
    """A small greyscale PNG with a few random strokes."""
    rng = random.Random(seed)
    image = Image.new("L", (width, height), color=255)
    draw = ImageDraw.Draw(image)
    for _ in range(3):
        draw.line([(rng.randrange(width), rng.randrange(height)) for _ in range(2)], fill=0,
                  width=2)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _bytes(value: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def write_span(folder: str, labels: dict[str, Sequence[int]], size: tuple[int, int],
               seed: int = 0) -> str:
    """Writes Split-<split>/data.gz TFRecords of pairs in PairExampleGen's format, one pair per
    label, images of `size` (width, height). Returns `folder`."""
    for split, split_labels in labels.items():
        os.makedirs(os.path.join(folder, f"Split-{split}"), exist_ok=True)
        path = os.path.join(folder, f"Split-{split}", "data_tfrecord-00000-of-00001.gz")
        with tf.io.TFRecordWriter(path, options="GZIP") as writer:
            for i, label in enumerate(split_labels):
                left, right = f"{split}/c{i % 4}", f"{split}/c{(i + label - 1) % 4}"
                feature = {
                    "left_image": _bytes(png_bytes(*size, seed=seed * 1000 + 2 * i)),
                    "right_image": _bytes(png_bytes(*size, seed=seed * 1000 + 2 * i + 1)),
                    "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
                    "left_class": _bytes(left.encode()),
                    "right_class": _bytes(right.encode()),
                }
                example = tf.train.Example(features=tf.train.Features(feature=feature))
                writer.write(example.SerializeToString())
    return folder


def balanced(n: int) -> list[int]:
    return [i % 2 for i in range(n)]


def validation_pipeline(examples_dir: str, workdir: str, validation: ValidationConfig,
                        with_transform: bool) -> tfx.dsl.Pipeline:
    """Imported examples -> the pipeline's validation nodes (-> Transform after the gate)."""
    root = os.path.join(workdir, "root")
    importer = tfx.dsl.Importer(
        source_uri=examples_dir,
        artifact_type=tfx.types.standard_artifacts.Examples,
        properties={"split_names": '["train", "eval"]'},
    ).with_id("examples_importer")
    nodes = pipeline_lib.make_validation(importer.outputs["result"], validation, root)
    components = [importer, *nodes.values()]
    if with_transform:
        transform = tfx.components.Transform(
            examples=importer.outputs["result"],
            schema=nodes[pipeline_lib.SCHEMA_GEN].outputs["schema"],
            preprocessing_fn=pipeline_lib.PREPROCESSING_FN,
            custom_config={"image": section_to_dict(ImageConfig(height=8, width=8))},
        ).with_id(pipeline_lib.TRANSFORM)
        transform.add_upstream_node(nodes[pipeline_lib.VALIDATION_GATE])
        components.append(transform)
    return tfx.dsl.Pipeline(
        pipeline_name="validation-test",
        pipeline_root=root,
        components=components,
        enable_cache=False,
        metadata_connection_config=local_runner.metadata_config(
            os.path.join(workdir, "metadata.sqlite")),
        beam_pipeline_args=list(local_runner.DEFAULT_BEAM_ARGS),
    )


def run_validation(
    examples_dir: str,
    workdir: str,
    validation: ValidationConfig = ValidationConfig(),
    with_transform: bool = False,
) -> tuple[summary_lib.RunSummary, Optional[BaseException]]:
    """Runs the validation pipeline; returns its summary and the error that stopped it."""
    os.makedirs(workdir, exist_ok=True)
    pipeline = validation_pipeline(examples_dir, workdir, validation, with_transform)
    error = None
    try:
        tfx.orchestration.LocalDagRunner().run(pipeline)
    except Exception as e:  # noqa: BLE001 - the test inspects it.
        error = e
    summary = summary_lib.summarize(local_runner.metadata_config(
        os.path.join(workdir, "metadata.sqlite")), "validation-test")
    return summary, error


def states(summary: summary_lib.RunSummary) -> dict[str, str]:
    return {c.component: c.state for c in summary.components}
