"""GalleryBuilder's executor: `trainer.gallery.build_gallery_model` on the Trainer's model and
the configured gallery, written as a Model artifact in the Trainer's layout (Format-Serving/),
so Evaluator, InfraValidator and Pusher read it as they read the Trainer's."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable, Optional

from absl import logging
from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.utils import path_utils

from siamese_tfx.components.contract.config import GalleryConfig, from_dict

MODEL_KEY = "model"  # the Trainer's model (input)
GALLERY_MODEL_KEY = "gallery_model"  # the model with the gallery (output)
GALLERY_CONFIG_KEY = "gallery_config"
MODEL_NAME_KEY = "model_name"
# Exists only to invalidate the cache when the gallery's files change under the same path.
GALLERY_STAMP_KEY = "gallery_stamp"

# Custom properties of the output Model: what assets/gallery.json records, in ML Metadata.
FINGERPRINT_PROPERTY = "gallery_fingerprint"
IDENTITIES_PROPERTY = "gallery_identities"
EXEMPLARS_PROPERTY = "gallery_exemplars"
AGGREGATE_PROPERTY = "gallery_aggregate"
TOP_K_PROPERTY = "identify_top_k"
SOURCE_PROPERTY = "gallery_source"


class Executor(base_executor.BaseExecutor):
    """Writes the gallery model; fails naming the gallery folder, file or row it cannot use."""

    def Do(
        self,
        input_dict: dict[str, list[types.Artifact]],
        output_dict: dict[str, list[types.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        # Model code, imported only where the component runs (never to build the pipeline).
        from siamese_tfx.components.trainer import gallery

        config = from_dict(GalleryConfig, json.loads(exec_properties[GALLERY_CONFIG_KEY]))
        model = artifact_utils.get_single_instance(input_dict[MODEL_KEY])
        output = artifact_utils.get_single_instance(output_dict[GALLERY_MODEL_KEY])
        model_path = path_utils.serving_model_path(model.uri,
                                                   path_utils.is_old_model_artifact(model))
        entries = gallery.read_gallery(config.gallery_path, config.gallery_class_depth)
        record = gallery.build_gallery_model(
            model_path, entries, path_utils.serving_model_dir(output.uri),
            exec_properties[MODEL_NAME_KEY], config.gallery_aggregate, config.gallery_top_k,
            record={"gallery_source": config.gallery_path})
        output.set_string_custom_property(FINGERPRINT_PROPERTY, record["gallery_fingerprint"])
        output.set_int_custom_property(IDENTITIES_PROPERTY, record["identities"])
        output.set_int_custom_property(EXEMPLARS_PROPERTY, record["exemplars"])
        output.set_string_custom_property(AGGREGATE_PROPERTY, record["aggregate"])
        output.set_int_custom_property(TOP_K_PROPERTY, record["top_k"])
        output.set_string_custom_property(SOURCE_PROPERTY, config.gallery_path)
        logging.info("Gallery model: %d identities from %d exemplars (%s), identify returns the "
                     "top %d; gallery fingerprint %s", record["identities"],
                     record["exemplars"], record["aggregate"], record["top_k"],
                     record["gallery_fingerprint"][:16])


@dataclass
class GalleryOutcome:
    """A GalleryBuilder's output Model read back from ML Metadata."""

    identities: int
    exemplars: int
    aggregate: str
    top_k: int
    fingerprint: str
    source: str

    def format(self) -> str:
        return (f"Gallery: {self.identities} identities from {self.exemplars} exemplars "
                f"({self.aggregate}) of {self.source}, identify returns the top {self.top_k}; "
                f"fingerprint {self.fingerprint[:16]}")


def read_outcome(outputs: Iterable[Any]) -> Optional[GalleryOutcome]:
    """The gallery model among a GalleryBuilder execution's outputs (ML Metadata artifacts)."""
    for a in outputs:
        properties = a.custom_properties
        if FINGERPRINT_PROPERTY in properties:
            return GalleryOutcome(properties[IDENTITIES_PROPERTY].int_value,
                                  properties[EXEMPLARS_PROPERTY].int_value,
                                  properties[AGGREGATE_PROPERTY].string_value,
                                  properties[TOP_K_PROPERTY].int_value,
                                  properties[FINGERPRINT_PROPERTY].string_value,
                                  properties[SOURCE_PROPERTY].string_value)
    return None
