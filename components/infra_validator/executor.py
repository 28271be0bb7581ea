"""InfraValidator's executor: the requests (the model's own warmup requests, then one request
per signature of the serving contract), serving.infra_validation's check, and the blessing."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from typing import Any, Iterable, Optional

from absl import logging
from tensorflow_serving.apis import predict_pb2
from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.dsl.io import fileio
from tfx.types import artifact_utils
from tfx.utils import path_utils

from siamese_tfx.components.contract import signatures
from siamese_tfx.components.contract.config import InfraValidationConfig, from_dict
from siamese_tfx.serving import infra_validation, requests

MODEL_KEY = "model"
BLESSING_KEY = "blessing"
INFRA_CONFIG_KEY = "infra_config"
MODEL_NAME_KEY = "model_name"

REPORT_JSON = "infra_validation.json"
SERVER_LOG = "server.log"
BLESSED_FILE = "INFRA_BLESSED"  # The marker files TFX's InfraValidator writes.
NOT_BLESSED_FILE = "INFRA_NOT_BLESSED"
BLESSED_PROPERTY = "blessed"  # What Pusher reads (tfx.components.util.model_utils).
REASON_PROPERTY = "reason"


def warmup_requests(model_path: str) -> list[tuple[str, predict_pb2.PredictRequest]]:
    """The model's assets.extra/tf_serving_warmup_requests, labelled by position."""
    from siamese_tfx.serving.warmup import read_warmup_requests

    path = os.path.join(model_path, signatures.WARMUP_DIR, signatures.WARMUP_FILE)
    if not fileio.exists(path):
        return []
    return [(f"warmup request {i}", log.predict_log.request)
            for i, log in enumerate(read_warmup_requests(path))
            if log.WhichOneof("log_type") == "predict_log"]


def _images_in(requests: list[tuple[str, predict_pb2.PredictRequest]]) -> list[bytes]:
    images: list[bytes] = []
    for _, request in requests:
        for name in sorted(request.inputs):
            for value in request.inputs[name].string_val:
                if value not in images:
                    images.append(value)
    return images


def signature_names(model_path: str) -> set[str]:
    """The signatures of the SavedModel at `model_path`, read from its saved_model.pb (empty
    when it cannot be read: loading the model then fails the validation with the reason)."""
    from tensorflow.core.protobuf import saved_model_pb2

    path = os.path.join(model_path, "saved_model.pb")
    if not fileio.exists(path):
        return set()
    with fileio.open(path, "rb") as f:
        saved_model = saved_model_pb2.SavedModel.FromString(f.read())
    return {name for graph in saved_model.meta_graphs for name in graph.signature_def}


def contract_requests(images: list[bytes], identify: bool = False
                      ) -> list[tuple[str, predict_pb2.PredictRequest]]:
    """One request per signature a client of the pushed model relies on: `compare` and
    `serving_default` (pairs) and `embed`, and `identify` for a gallery model, on `images` (at
    least one encoded image)."""
    lefts = images[:2]
    rights = (images[1:] + images[:1])[:2]
    contract = [requests.compare_request("", lefts, rights),
                requests.embed_request("", images[:2]),
                requests.examples_request("", lefts, rights)]
    if identify:
        contract.append(requests.identify_request("", images[:2]))
    return [(f"contract: {r.model_spec.signature_name}", r) for r in contract]


def validate_model(model_path: str, model_name: str, config: InfraValidationConfig,
                   work_dir: str | None = None) -> infra_validation.InfraReport:
    """Infra validation of the SavedModel at `model_path` (see serving.infra_validation)."""
    warmup = warmup_requests(model_path)
    if not warmup:
        return infra_validation.InfraReport(
            False, f"the model has no warmup requests ({signatures.WARMUP_DIR}/{signatures.WARMUP_FILE}): the Trainer "
            "writes them, and TF Serving would serve it cold", model_path)
    images = _images_in(warmup)
    if not images:
        return infra_validation.InfraReport(
            False, "the model's warmup requests hold no encoded image", model_path)
    identify = signatures.IDENTIFY in signature_names(model_path)
    return infra_validation.validate(
        model_path, model_name, warmup + contract_requests(images, identify), work_dir=work_dir,
        load_timeout_s=config.infra_load_timeout_s,
        request_timeout_s=config.infra_request_timeout_s, tolerance=config.infra_tolerance)


class Executor(base_executor.BaseExecutor):
    """Writes a TFX InfraBlessing: blessed (Pusher may push) or not, with the reason."""

    def Do(
        self,
        input_dict: dict[str, list[types.Artifact]],
        output_dict: dict[str, list[types.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        config = from_dict(InfraValidationConfig, json.loads(exec_properties[INFRA_CONFIG_KEY]))
        model = artifact_utils.get_single_instance(input_dict[MODEL_KEY])
        blessing = artifact_utils.get_single_instance(output_dict[BLESSING_KEY])
        model_path = path_utils.serving_model_path(model.uri,
                                                   path_utils.is_old_model_artifact(model))
        with tempfile.TemporaryDirectory(prefix="infra-validation-") as scratch:
            report = validate_model(model_path, exec_properties[MODEL_NAME_KEY], config,
                                    work_dir=scratch)
            fileio.makedirs(blessing.uri)
            log = os.path.join(scratch, "server.log")
            if os.path.exists(log):
                fileio.copy(log, os.path.join(blessing.uri, SERVER_LOG), overwrite=True)
        with fileio.open(os.path.join(blessing.uri, REPORT_JSON), "w") as f:
            f.write(report.to_json())
        marker = BLESSED_FILE if report.blessed else NOT_BLESSED_FILE
        with fileio.open(os.path.join(blessing.uri, marker), "w") as f:
            f.write("")
        blessing.set_int_custom_property(BLESSED_PROPERTY, int(report.blessed))
        blessing.set_string_custom_property(REASON_PROPERTY, report.reason)
        logging.info(report.format())


@dataclass
class InfraOutcome:
    """An InfraBlessing read back: the verdict, its reason, how many requests were checked
    (None when the report is missing) and the signatures the passed ones called."""

    blessed: bool
    reason: str
    checks: Optional[int]
    signatures: tuple[str, ...] = ()


def read_outcome(outputs: Iterable[Any]) -> Optional[InfraOutcome]:
    """The InfraBlessing among an InfraValidator execution's outputs (ML Metadata artifacts)."""
    for a in outputs:
        if BLESSED_PROPERTY in a.custom_properties:
            report = os.path.join(a.uri, REPORT_JSON)
            checks, passed = None, ()
            if fileio.exists(report):
                with fileio.open(report) as f:
                    done = json.loads(f.read()).get("checks", [])
                checks = len(done)
                passed = tuple(sorted({c["signature"] for c in done if c["ok"]}))
            return InfraOutcome(bool(a.custom_properties[BLESSED_PROPERTY].int_value),
                                a.custom_properties[REASON_PROPERTY].string_value, checks,
                                passed)
    return None

