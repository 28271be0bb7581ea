"""DataValidationGate's executor: ExampleValidator's anomalies plus the checks TFDV's schema does
not express (class balance, split sizes, drift from the previous accepted run), and a failure
that names them all unless the run overrides it.

Drift is measured with TFDV's Jensen-Shannon comparator on the label and on the images' heights
and widths. The examples hold the images as PNG bytes, whose statistics say nothing of their
size, so the gate reads each image's size from its PNG header into "drift statistics"
(`drift_statistics/Split-<split>/FeatureStats.pb`, TFDV statistics of label, left_height,
left_width, right_height, right_width); the next run compares against them.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import struct
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Optional

import pandas as pd
import tensorflow as tf
import tensorflow_data_validation as tfdv
from PIL import Image
from tensorflow_metadata.proto.v0 import anomalies_pb2, schema_pb2, statistics_pb2
from tfx import types
from tfx.components.statistics_gen import stats_artifact_utils
from tfx.dsl.components.base import base_executor
from tfx.dsl.io import fileio
from tfx.types import artifact_utils

from siamese_tfx.components import stopped_outputs
from siamese_tfx.components.contract import errors, features
from siamese_tfx.components.contract.config import ValidationConfig, from_dict

EXAMPLES_KEY = "examples"
STATISTICS_KEY = "statistics"
ANOMALIES_KEY = "anomalies"
PREVIOUS_RESULT_KEY = "previous_result"
RESULT_KEY = "result"
VALIDATION_CONFIG_KEY = "validation_config"

RESULT_JSON = "validation.json"
# Custom properties of the result artifact: how many anomalies, whether the run overrode them,
# and the verdict's lines.
ANOMALIES_PROPERTY = "anomalies"
OVERRIDDEN_PROPERTY = "overridden"
LINES_PROPERTY = "anomaly_lines"
DRIFT_STATISTICS = "drift_statistics"
ANOMALIES_FILE = "SchemaDiff.pb"  # ExampleValidator's per-split output.
STATS_FILE = "FeatureStats.pb"

IMAGE_SIZE_FEATURES = ("left_height", "left_width", "right_height", "right_width")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class DataAnomaliesFound(errors.DataError):
    """The examples have anomalies and the run did not override them."""


@dataclass(frozen=True)
class Anomaly:
    """One reason the data is not fit to train on."""

    split: str
    feature: str  # "" for the whole split.
    check: str  # schema, drift, class_balance or split_size.
    description: str


@dataclass(frozen=True)
class Measurement:
    """A checked quantity, with its bounds (None: unbounded on that side)."""

    split: str
    name: str
    value: float
    lower: Optional[float]
    upper: Optional[float]

    @property
    def ok(self) -> bool:
        return ((self.lower is None or self.value >= self.lower)
                and (self.upper is None or self.value <= self.upper))


@dataclass
class Verdict:
    """What the gate decided, and why."""

    anomalies: list[Anomaly] = field(default_factory=list)
    measurements: list[Measurement] = field(default_factory=list)
    previous_result: str = ""  # URI of the accepted run's result drift was measured against.
    overridden: bool = False

    @property
    def blocked(self) -> bool:
        return bool(self.anomalies) and not self.overridden

    def to_json(self) -> str:
        return json.dumps({
            "anomalies": [dataclasses.asdict(a) for a in self.anomalies],
            "measurements": [dict(dataclasses.asdict(m), ok=m.ok) for m in self.measurements],
            "previous_result": self.previous_result,
            "overridden": self.overridden,
            "blocked": self.blocked,
        }, indent=1)

    @classmethod
    def from_json(cls, text: str) -> "Verdict":
        data = json.loads(text)
        return cls(
            anomalies=[Anomaly(**a) for a in data["anomalies"]],
            measurements=[Measurement(**{k: v for k, v in m.items() if k != "ok"})
                          for m in data["measurements"]],
            previous_result=data["previous_result"],
            overridden=data["overridden"],
        )

    def lines(self) -> list[str]:
        """One line per anomaly, for messages and summaries."""
        return [f"[{a.split}] {a.feature or '(split)'} ({a.check}): {a.description}"
                for a in self.anomalies]


def read_statistics(
    statistics: types.Artifact,
) -> dict[str, statistics_pb2.DatasetFeatureStatisticsList]:
    """{split: statistics} of an ExampleStatistics artifact."""
    return {
        split: stats_artifact_utils.load_statistics(statistics, split).proto()
        for split in artifact_utils.decode_split_names(statistics.split_names)
    }


def schema_anomalies(anomalies: types.Artifact) -> list[Anomaly]:
    """ExampleValidator's anomalies, per split and feature."""
    out = []
    for split in artifact_utils.decode_split_names(anomalies.split_names):
        path = os.path.join(artifact_utils.get_split_uri([anomalies], split), ANOMALIES_FILE)
        if not fileio.exists(path):
            continue
        with fileio.open(path, "rb") as f:
            proto = anomalies_pb2.Anomalies.FromString(f.read())
        for feature, info in sorted(proto.anomaly_info.items()):
            out.append(Anomaly(split, feature, "schema", _describe(info)))
        if proto.HasField("dataset_anomaly_info"):
            out.append(Anomaly(split, "", "schema", _describe(proto.dataset_anomaly_info)))
    return out


def _describe(info: anomalies_pb2.AnomalyInfo) -> str:
    reasons = [r.description or r.short_description for r in info.reason]
    return " ".join(reasons) or info.description or info.short_description


def _feature(stats: statistics_pb2.DatasetFeatureStatistics, name: str):
    for f in stats.features:
        if (f.path.step and f.path.step[0] == name) or f.name == name:
            return f
    return None


def split_checks(
    split: str, stats: statistics_pb2.DatasetFeatureStatisticsList, config: ValidationConfig
) -> tuple[list[Anomaly], list[Measurement]]:
    """Split size and class balance (share of label-1 pairs) of one split."""
    dataset = stats.datasets[0]
    anomalies: list[Anomaly] = []
    size = Measurement(split, "examples", float(dataset.num_examples),
                       float(config.min_split_examples), None)
    measurements = [size]
    if not size.ok:
        anomalies.append(Anomaly(split, "", "split_size",
                                 f"the split holds {dataset.num_examples} pair(s), fewer than "
                                 f"the {config.min_split_examples} required "
                                 "(--min-split-examples)"))
    label = _feature(dataset, features.LABEL)
    if label is not None and label.HasField("num_stats") and dataset.num_examples:
        # With labels in {0, 1} (the schema checks that), the mean is the share of 1s.
        balance = Measurement(split, "positive fraction", label.num_stats.mean,
                              config.min_positive_fraction, config.max_positive_fraction)
        measurements.append(balance)
        if not balance.ok:
            anomalies.append(Anomaly(
                split, features.LABEL, "class_balance",
                f"{balance.value:.3f} of the pairs are positive (label 1), outside "
                f"[{config.min_positive_fraction}, {config.max_positive_fraction}] "
                "(--min-positive-fraction, --max-positive-fraction)"))
    return anomalies, measurements


def image_size(data: bytes) -> tuple[int, int]:
    """(height, width) of an encoded image, from the PNG header when it is one; (0, 0) when the
    bytes are not a readable image."""
    if data[:8] == _PNG_SIGNATURE and data[12:16] == b"IHDR":
        width, height = struct.unpack(">II", data[16:24])
        return height, width
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.size[1], img.size[0]
    except Exception:  # noqa: BLE001 - not an image: size 0, the schema reports the image.
        return 0, 0


def _records(split_uri: str) -> Iterator[bytes]:
    files = sorted(fileio.glob(os.path.join(split_uri, "*")))
    if not files:
        return
    compression = "GZIP" if all(f.endswith(".gz") for f in files) else ""
    for record in tf.data.TFRecordDataset(files, compression_type=compression):
        yield record.numpy()


def drift_statistics(
    examples: types.Artifact,
) -> dict[str, statistics_pb2.DatasetFeatureStatisticsList]:
    """{split: TFDV statistics of the label and the images' heights and widths}."""
    out = {}
    for split in artifact_utils.decode_split_names(examples.split_names):
        rows = []
        for record in _records(artifact_utils.get_split_uri([examples], split)):
            feature = tf.train.Example.FromString(record).features.feature
            row = {features.LABEL: (feature[features.LABEL].int64_list.value or [-1])[0]}
            for key in features.IMAGE_KEYS:
                height, width = image_size((feature[key].bytes_list.value or [b""])[0])
                side = key.split("_")[0]
                row[f"{side}_height"], row[f"{side}_width"] = height, width
            rows.append(row)
        frame = pd.DataFrame(rows, columns=[features.LABEL, *IMAGE_SIZE_FEATURES], dtype="int64")
        out[split] = tfdv.generate_statistics_from_dataframe(frame)
    return out


def write_drift_statistics(
    stats: dict[str, statistics_pb2.DatasetFeatureStatisticsList], result_dir: str
) -> None:
    for split, proto in stats.items():
        folder = os.path.join(result_dir, DRIFT_STATISTICS, f"Split-{split}")
        fileio.makedirs(folder)
        with fileio.open(os.path.join(folder, STATS_FILE), "wb") as f:
            f.write(proto.SerializeToString())


def read_drift_statistics(
    result_dir: str,
) -> dict[str, statistics_pb2.DatasetFeatureStatisticsList]:
    out = {}
    for path in sorted(fileio.glob(os.path.join(result_dir, DRIFT_STATISTICS, "Split-*",
                                                STATS_FILE))):
        split = os.path.basename(os.path.dirname(path))[len("Split-"):]
        with fileio.open(path, "rb") as f:
            out[split] = statistics_pb2.DatasetFeatureStatisticsList.FromString(f.read())
    return out


def drift_schema(config: ValidationConfig) -> schema_pb2.Schema:
    """A schema of the drift statistics' features with Jensen-Shannon comparators at the
    configured bounds."""
    schema = schema_pb2.Schema()
    bounds = {features.LABEL: config.max_label_drift} | {
        f: config.max_image_size_drift for f in IMAGE_SIZE_FEATURES}
    for name, bound in bounds.items():
        feature = schema.feature.add(name=name, type=schema_pb2.INT)
        feature.drift_comparator.jensen_shannon_divergence.threshold = bound
    return schema


def drift_checks(
    split: str,
    current: statistics_pb2.DatasetFeatureStatisticsList,
    previous: statistics_pb2.DatasetFeatureStatisticsList,
    schema: schema_pb2.Schema,
) -> tuple[list[Anomaly], list[Measurement]]:
    """TFDV's drift comparators (from `drift_schema`) between two runs' statistics of a split."""
    result = tfdv.validate_statistics(current, schema, previous_statistics=previous)
    anomalies, measurements = [], []
    for info in result.drift_skew_info:
        feature = ".".join(info.path.step)
        for m in info.drift_measurements:
            kind = anomalies_pb2.DriftSkewInfo.Measurement.Type.Name(m.type).lower()
            measurement = Measurement(split, f"{feature} drift ({kind})", m.value, None,
                                      m.threshold)
            measurements.append(measurement)
            if not measurement.ok:
                anomalies.append(Anomaly(
                    split, feature, "drift",
                    f"{kind} from the previous run's statistics is {m.value:.4f}, above the "
                    f"bound {m.threshold:g}"))
    return anomalies, measurements


def evaluate(
    anomalies: types.Artifact,
    statistics: types.Artifact,
    current_drift: dict[str, statistics_pb2.DatasetFeatureStatisticsList],
    previous_result: Optional[types.Artifact],
    config: ValidationConfig,
) -> Verdict:
    """Every check of the gate on one run's artifacts (and the previous accepted run's result,
    when there is one)."""
    verdict = Verdict(anomalies=schema_anomalies(anomalies), overridden=config.allow_anomalies)
    for split, stats in read_statistics(statistics).items():
        found, measured = split_checks(split, stats, config)
        verdict.anomalies += found
        verdict.measurements += measured
    previous = read_drift_statistics(previous_result.uri) if previous_result else {}
    if previous:
        verdict.previous_result = previous_result.uri
        schema = drift_schema(config)
        for split in sorted(set(current_drift) & set(previous)):
            found, measured = drift_checks(split, current_drift[split], previous[split], schema)
            verdict.anomalies += found
            verdict.measurements += measured
    return verdict


def failure_message(verdict: Verdict, result_path: str) -> str:
    lines = "\n".join(f"  - {line}" for line in verdict.lines())
    return (
        f"Data validation found {len(verdict.anomalies)} anomaly(ies); the run stops before "
        f"Transform and Trainer:\n{lines}\n"
        f"Details: {result_path}. `siamese-tfx data-report <output-dir>` shows them with the "
        "statistics and the quarantine report. To train on this data anyway, knowingly, re-run "
        "with --allow-anomalies."
    )


class Executor(base_executor.BaseExecutor):
    """Writes the verdict (validation.json) and fails on anomalies unless overridden."""

    def Do(
        self,
        input_dict: dict[str, list[types.Artifact]],
        output_dict: dict[str, list[types.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        config = from_dict(ValidationConfig, json.loads(exec_properties[VALIDATION_CONFIG_KEY]))
        previous = input_dict.get(PREVIOUS_RESULT_KEY) or []
        current_drift = drift_statistics(
            artifact_utils.get_single_instance(input_dict[EXAMPLES_KEY]))
        verdict = evaluate(
            artifact_utils.get_single_instance(input_dict[ANOMALIES_KEY]),
            artifact_utils.get_single_instance(input_dict[STATISTICS_KEY]),
            current_drift,
            previous[-1] if previous else None,
            config,
        )
        result = artifact_utils.get_single_instance(output_dict[RESULT_KEY])
        result.set_int_custom_property(ANOMALIES_PROPERTY, len(verdict.anomalies))
        result.set_int_custom_property(OVERRIDDEN_PROPERTY, int(verdict.overridden and
                                                                bool(verdict.anomalies)))
        result.set_string_custom_property(LINES_PROPERTY, "\n".join(verdict.lines()))
        target = stopped_outputs.stopped_dir(result.uri) if verdict.blocked else result.uri
        fileio.makedirs(target)
        write_drift_statistics(current_drift, target)
        with fileio.open(os.path.join(target, RESULT_JSON), "w") as f:
            f.write(verdict.to_json())
        if verdict.blocked:
            raise DataAnomaliesFound(failure_message(verdict, os.path.join(target, RESULT_JSON)))


# --- Reading the verdict back (the run summary and the data report use these) ---------------


@dataclass
class GateOutcome:
    """What the gate decided about a run: its anomaly lines, whether the run overrode them, and
    the full verdict with its file when it could be read."""

    lines: list[str] = field(default_factory=list)
    overridden: bool = False
    verdict: Optional[Verdict] = None
    verdict_path: str = ""


def read_outcome(outputs: Iterable[Any], pipeline_roots: Iterable[str], component_id: str,
                 execution_id: int) -> GateOutcome:
    """The gate's outcome from its execution's output artifacts (ML Metadata), or, for a run it
    stopped (TFX then drops its outputs), from the verdict it kept under a pipeline root."""
    outcome = GateOutcome()
    folders = []
    for a in outputs:
        folders.append(a.uri)
        if ANOMALIES_PROPERTY in a.custom_properties:
            lines = a.custom_properties[LINES_PROPERTY].string_value
            outcome.lines = [line for line in lines.splitlines() if line]
            outcome.overridden = bool(a.custom_properties[OVERRIDDEN_PROPERTY].int_value)
    folders.append(stopped_outputs.find_stopped(pipeline_roots, component_id, RESULT_KEY,
                                                execution_id))
    path = next((os.path.join(f, RESULT_JSON) for f in folders
                 if f and fileio.exists(os.path.join(f, RESULT_JSON))), "")
    if path:
        with fileio.open(path) as f:
            outcome.verdict = Verdict.from_json(f.read())
        outcome.verdict_path = path
        outcome.lines = outcome.lines or outcome.verdict.lines()
    return outcome

