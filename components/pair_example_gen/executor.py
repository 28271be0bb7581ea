"""PairExampleGen's executor: image pairs to tf.Examples on Beam, bad inputs to a quarantine
report.

Two input kinds feed one writer (`write_pairs`): `manifest_pairs` (the rows of a pairs
manifest) and `class_folder_pairs` (balanced pairs sampled from class folders). Beam graph:

  image paths ─ReadImage─► CanonicalImage (PNG bytes, or the reason it is unreadable)
  pairs (sampled from the readable images per split, or read from a manifest)
  pairs ⨝ images ─► tf.Example per pair ─► Split-train/, Split-eval/ (gzipped TFRecord)
                 └► rejections ─► quarantine report (JSON lines, then CSV/JSON + summary)
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Optional

import apache_beam as beam
import tensorflow as tf
from tfx import types
from tfx.components.util import examples_utils
from tfx.dsl.components.base import base_beam_executor
from tfx.dsl.io import fileio
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils

from siamese_tfx.components import stopped_outputs
from siamese_tfx.components.contract import errors, features
from siamese_tfx.components.contract.config import DataConfig, from_dict
from siamese_tfx.components.pair_example_gen import inputs as inputs_lib
from siamese_tfx.components.pair_example_gen import sampling
from siamese_tfx.components.pair_example_gen.images import CanonicalImage, canonicalize

EXAMPLES_KEY = "examples"
QUARANTINE_KEY = "quarantine"
DATA_CONFIG_KEY = "data_config"
INPUT_BASE_KEY = "input_base"

QUARANTINED_PROPERTY = "quarantined"  # the report artifact's count of quarantined inputs
REPORT_CSV = "quarantine.csv"
REPORT_JSON = "quarantine.json"
SUMMARY_JSON = "summary.json"
_REJECTIONS_PREFIX = "rejections"
_COUNTS_PREFIX = "counts"


class QuarantineLimitExceeded(errors.DataError):
    """More inputs were quarantined than the configured limit allows."""


def _read_image(path: str, image_root: str, max_pixels: int, max_bytes: int) -> CanonicalImage:
    """Reads one image file (a regular file of at most `max_bytes`) and canonicalises it; any
    problem comes back as the image's error, never raised."""
    full = os.path.join(image_root, path)
    problem = inputs_lib.unreadable_reason(full, max_bytes)
    if problem:
        return CanonicalImage(path, error=problem)
    try:
        with fileio.open(full, "rb") as f:
            data = f.read(max_bytes + 1)  # a file that grew since it was checked stays capped
    except Exception as e:  # noqa: BLE001 - unreadable file: reported, not raised.
        return CanonicalImage(path, error=f"cannot read file: {type(e).__name__}: {e}")
    if len(data) > max_bytes:
        return CanonicalImage(path, error=f"file is larger than the limit of {max_bytes} bytes "
                                          "(--max-image-bytes)")
    return canonicalize(path, data, max_pixels)


def _bytes_feature(value: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _make_example(pair: sampling.Pair, left_png: bytes, right_png: bytes) -> bytes:
    feature = {
        features.LEFT_IMAGE: _bytes_feature(left_png),
        features.RIGHT_IMAGE: _bytes_feature(right_png),
        features.LABEL: tf.train.Feature(int64_list=tf.train.Int64List(value=[pair.label])),
        features.LEFT_CLASS: _bytes_feature(pair.left_class.encode()),
        features.RIGHT_CLASS: _bytes_feature(pair.right_class.encode()),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


class _SamplePairs(beam.DoFn):
    """For one split name, samples pairs among the readable images of that split's classes."""

    def __init__(self, class_of: dict[str, str], split_of: dict[str, str], data: DataConfig):
        self._class_of = class_of
        self._split_of = split_of
        self._data = data

    def process(self, split: str, readable: list[str]) -> Iterator[Any]:
        images: dict[str, list[str]] = {}
        for path in readable:
            cls = self._class_of[path]
            if self._split_of[cls] == split:
                images.setdefault(cls, []).append(path)
        for cls in sorted(images):
            if len(images[cls]) < 2:
                yield beam.pvalue.TaggedOutput(
                    "rejected",
                    inputs_lib.Rejection(
                        images[cls][0], 0, cls,
                        f"class {cls!r} has a single readable image: no positive pair possible",
                    ),
                )
                del images[cls]
        count = self._data.num_train_pairs if split == sampling.TRAIN else self._data.num_eval_pairs
        seed = self._data.seed if split == sampling.TRAIN else self._data.seed + 1
        try:
            pairs = sampling.sample_pairs(images, count, seed)
        except errors.DataError as e:
            raise errors.DataError(
                f"{self._data.image_root}, {split} split (--num-{split}-pairs {count}): {e}"
            ) from None
        for i, pair in enumerate(pairs):
            yield (split, i, 0), pair


def _assemble(item: tuple[Any, dict[str, list[Any]]], image_root: str) -> Iterator[Any]:
    """Joins a pair with its two images: a (split, example) or a rejection (whose source is
    the bad image's full path)."""
    (split, _, row), grouped = item
    pair: sampling.Pair = grouped["pair"][0]
    sides = dict(grouped["sides"])
    problems = [f"{side} image {sides[side].path!r}: {sides[side].error}"
                for side in ("left", "right") if sides[side].error]
    if problems:
        yield beam.pvalue.TaggedOutput(
            "rejected",
            inputs_lib.Rejection(
                os.path.join(image_root, sides["left" if sides["left"].error else "right"].path),
                row, f"{pair.left},{pair.right},{pair.label}", "; ".join(problems),
            ),
        )
        return
    yield split, _make_example(pair, sides["left"].png, sides["right"].png)


def _sides_by_pair(item: tuple[str, dict[str, list[Any]]]) -> Iterator[Any]:
    _, grouped = item
    image = grouped["image"][0]
    for pair_id, side in grouped["refs"]:
        yield pair_id, (side, image)


@dataclass
class PairSources:
    """What one input kind (a manifest, or class folders) feeds the writer: the images read
    (CanonicalImage per path), the pairs keyed ((split, index, row), Pair), the rejections found
    on the way, and how many inputs (rows or files) there were."""

    images: beam.PCollection
    pairs: beam.PCollection
    pair_rejections: beam.PCollection
    early_rejections: list[inputs_lib.Rejection]
    input_count: int
    per_row: bool  # manifest rows are the unit counted (an image is reported through its rows)


def manifest_pairs(p: beam.Pipeline, data: DataConfig, root: str) -> PairSources:
    """The pairs of the manifest `data.manifest` (under `root`), split by class."""
    manifest = os.path.join(root, data.manifest)
    rows, rejected = inputs_lib.read_manifest(manifest, root)
    by_split, rejected_split = inputs_lib.assign_manifest_splits(
        rows, data.eval_class_fraction, data.seed, manifest)
    row_of = {(r.pair.left, r.pair.right): r.row for r in rows}
    keyed = [((split, i, row_of[(pr.left, pr.right)]), pr)
             for split, split_pairs in by_split.items() for i, pr in enumerate(split_pairs)]
    paths = sorted({x for _, pr in keyed for x in (pr.left, pr.right)})
    images = (p | "ImagePaths" >> beam.Create(paths)
              | "ReadImage" >> beam.Map(_read_image, root, data.max_image_pixels,
                                          data.max_image_bytes))
    return PairSources(images, p | "ManifestPairs" >> beam.Create(keyed),
                       p | "NoSamplingRejections" >> beam.Create([]),
                       rejected + rejected_split, len(rows) + len(rejected), per_row=True)


def class_folder_pairs(p: beam.Pipeline, data: DataConfig, root: str) -> PairSources:
    """Balanced pairs sampled per split from the readable images of `root`'s class folders."""
    classes, early_rejections = inputs_lib.list_class_folders(root, data.class_depth)
    train, evaluation = sampling.split_classes(list(classes), data.eval_class_fraction, data.seed)
    split_of = {c: sampling.TRAIN for c in train} | {c: sampling.EVAL for c in evaluation}
    class_of = {path: c for c, ps in classes.items() for path in ps}
    images = (p | "ImagePaths" >> beam.Create(sorted(class_of))
              | "ReadImage" >> beam.Map(_read_image, root, data.max_image_pixels,
                                          data.max_image_bytes))
    readable = images | "Readable" >> beam.FlatMap(lambda im: [im.path] if not im.error else [])
    sampled = (
        p | "Splits" >> beam.Create(list(sampling.SPLITS))
        | "SamplePairs" >> beam.ParDo(
            _SamplePairs(class_of, split_of, data), beam.pvalue.AsList(readable)
        ).with_outputs("rejected", main="pairs")
    )
    return PairSources(images, sampled.pairs, sampled.rejected, early_rejections,
                       len(class_of) + len(early_rejections), per_row=False)


def write_pairs(p: beam.Pipeline, sources: PairSources, root: str, examples_uri: str,
                tmp: str) -> None:
    """The one writer: joins each pair with its two images into a tf.Example, writes the splits
    (Split-<split>/ gzipped TFRecords), and every rejection and per-split count to `tmp`."""
    pairs, images = sources.pairs, sources.images
    refs = pairs | "RefsByPath" >> beam.FlatMap(
        lambda kv: [(kv[1].left, (kv[0], "left")), (kv[1].right, (kv[0], "right"))])
    sides = (
        {"refs": refs, "image": images | "ByPath" >> beam.Map(lambda im: (im.path, im))}
        | "JoinImages" >> beam.CoGroupByKey()
        | "SidesByPair" >> beam.FlatMap(_sides_by_pair)
    )
    assembled = (
        {"pair": pairs, "sides": sides}
        | "JoinPairs" >> beam.CoGroupByKey()
        | "Assemble" >> beam.FlatMap(_assemble, root).with_outputs("rejected", main="examples")
    )
    # In manifest mode a bad image is reported through each row that uses it (rows are the
    # unit counted); in class-folder mode the image itself is the unit.
    per_row = sources.per_row
    image_rejections = images | "BadImages" >> beam.FlatMap(
        lambda im: [inputs_lib.Rejection(os.path.join(root, im.path), 0, im.path, im.error)]
        if im.error and not per_row else [])
    (
        (p | "EarlyRejections" >> beam.Create(sources.early_rejections),
         sources.pair_rejections, image_rejections, assembled.rejected)
        | "AllRejections" >> beam.Flatten()
        | "RejectionJson" >> beam.Map(lambda r: json.dumps(dataclasses.asdict(r)))
        | "WriteRejections" >> beam.io.WriteToText(
            os.path.join(tmp, _REJECTIONS_PREFIX), file_name_suffix=".jsonl")
    )
    for split in sampling.SPLITS:
        records = assembled.examples | f"Only{split}" >> beam.FlatMap(
            lambda kv, s=split: [kv[1]] if kv[0] == s else [])
        _ = records | f"Write{split}" >> beam.io.WriteToTFRecord(
            os.path.join(examples_uri, f"Split-{split}", "data_tfrecord"), file_name_suffix=".gz")
        _ = (
            records
            | f"Count{split}" >> beam.combiners.Count.Globally()
            | f"CountJson{split}" >> beam.Map(lambda n, s=split: json.dumps({s: n}))
            | f"WriteCount{split}" >> beam.io.WriteToText(
                os.path.join(tmp, f"{_COUNTS_PREFIX}-{split}"), file_name_suffix=".json")
        )


class Executor(base_beam_executor.BaseBeamExecutor):
    """Reads, checks and canonicalises images and writes one tf.Example per pair."""

    def Do(
        self,
        input_dict: dict[str, list[types.Artifact]],
        output_dict: dict[str, list[types.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        del input_dict
        data = from_dict(DataConfig, json.loads(exec_properties[DATA_CONFIG_KEY]))
        root = exec_properties[INPUT_BASE_KEY]
        examples = artifact_utils.get_single_instance(output_dict[EXAMPLES_KEY])
        report = artifact_utils.get_single_instance(output_dict[QUARANTINE_KEY])
        tmp = os.path.join(report.uri, ".beam")
        with self._make_beam_pipeline() as p:
            sources = (manifest_pairs if data.manifest else class_folder_pairs)(p, data, root)
            write_pairs(p, sources, root, examples.uri, tmp)

        examples.split_names = artifact_utils.encode_split_names(list(sampling.SPLITS))
        examples_utils.set_payload_format(examples, example_gen_pb2.FORMAT_TF_EXAMPLE)
        examples_utils.set_file_format(examples, "tfrecords_gzip")
        summary = _write_report(report, tmp, data, sources.input_count)
        examples.set_int_custom_property("num_train_pairs", summary["pairs"][sampling.TRAIN])
        examples.set_int_custom_property("num_eval_pairs", summary["pairs"][sampling.EVAL])
        _enforce_limit(summary, data.max_quarantined, report.uri)


def _read_lines(pattern: str) -> Iterable[str]:
    for path in sorted(fileio.glob(pattern)):
        with fileio.open(path, "r") as f:
            yield from (line for line in f.read().splitlines() if line.strip())


def _write_report(
    report: types.Artifact, tmp: str, data: DataConfig, input_count: int
) -> dict[str, Any]:
    rejections = sorted(
        (json.loads(line) for line in _read_lines(os.path.join(tmp, _REJECTIONS_PREFIX + "*"))),
        key=lambda r: (r["source"], r["row"], r["item"]),
    )
    counts: dict[str, int] = {}
    for line in _read_lines(os.path.join(tmp, _COUNTS_PREFIX + "*")):
        counts.update(json.loads(line))
    fields = [f.name for f in dataclasses.fields(inputs_lib.Rejection)]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rejections)
    with fileio.open(os.path.join(report.uri, REPORT_CSV), "w") as f:
        f.write(out.getvalue())
    with fileio.open(os.path.join(report.uri, REPORT_JSON), "w") as f:
        f.write(json.dumps(rejections, indent=1))
    summary = {
        "mode": "manifest" if data.manifest else "class_folders",
        "inputs": input_count,
        "input_unit": "manifest rows" if data.manifest else "image files",
        "quarantined": len(rejections),
        "pairs": {s: counts.get(s, 0) for s in sampling.SPLITS},
        "max_quarantined": data.max_quarantined,
    }
    with fileio.open(os.path.join(report.uri, SUMMARY_JSON), "w") as f:
        f.write(json.dumps(summary, indent=1))
    fileio.rmtree(tmp)
    report.set_int_custom_property(QUARANTINED_PROPERTY, len(rejections))
    report.set_int_custom_property("inputs", input_count)
    return summary


def _enforce_limit(summary: dict[str, Any], limit: int, report_uri: str) -> None:
    count = summary["quarantined"]
    if count <= limit:
        return
    kept = stopped_outputs.stopped_dir(report_uri)
    fileio.makedirs(kept)
    for name in (REPORT_CSV, REPORT_JSON, SUMMARY_JSON):
        fileio.copy(os.path.join(report_uri, name), os.path.join(kept, name), overwrite=True)
    with fileio.open(os.path.join(report_uri, REPORT_JSON), "r") as f:
        first = json.loads(f.read())[:5]
    reasons = "\n".join(f"  - {r['item']} ({r['source']}:{r['row']}): {r['reason']}" for r in first)
    raise QuarantineLimitExceeded(
        f"{count} input(s) quarantined, more than the limit of {limit} "
        f"(--max-quarantined). First reasons:\n{reasons}\n"
        f"Full report: {os.path.join(kept, REPORT_CSV)}\n"
        f"(a copy of {os.path.join(report_uri, REPORT_CSV)}, which TFX removes with the failed "
        "component's outputs)"
    )


# --- Reading the report back (the run summary and the data report use these) ---------------


@dataclass
class QuarantineRecord:
    """A run's quarantine report: one row per quarantined input (item, source, row, reason),
    and the summary counts."""

    folder: str
    rows: list[dict[str, str]]
    summary: dict[str, Any]


def quarantined_count(outputs: Iterable[Any]) -> Optional[int]:
    """The count of quarantined inputs recorded on the report among `outputs` (ML Metadata
    artifacts of a PairExampleGen execution); None when there is none."""
    for a in outputs:
        if QUARANTINED_PROPERTY in a.custom_properties:
            return a.custom_properties[QUARANTINED_PROPERTY].int_value
    return None


def read_quarantine(outputs: Iterable[Any], pipeline_roots: Iterable[str], component_id: str,
                    execution_id: int) -> Optional[QuarantineRecord]:
    """The report of PairExampleGen execution `execution_id`: its QuarantineReport output, or,
    for a run it stopped (TFX then drops its outputs), the copy it kept under a pipeline root."""
    from siamese_tfx.components.pair_example_gen.component import QuarantineReport

    folders = [a.uri for a in outputs if a.type == QuarantineReport.TYPE_NAME]
    folders.append(stopped_outputs.find_stopped(pipeline_roots, component_id, QUARANTINE_KEY,
                                                execution_id))
    folder = next((f for f in folders if f and fileio.exists(os.path.join(f, REPORT_CSV))), None)
    if folder is None:
        return None
    with fileio.open(os.path.join(folder, REPORT_CSV)) as f:
        rows = list(csv.DictReader(io.StringIO(f.read())))
    with fileio.open(os.path.join(folder, SUMMARY_JSON)) as f:
        summary = json.loads(f.read())
    return QuarantineRecord(folder, rows, summary)

