"""GalleryBuilder: after the Trainer, the trained model plus the enrolled identities of
`GalleryConfig.gallery_path` and the `identify` signature (components/trainer/gallery.py), as
ONE Model artifact. It keeps every signature of the Trainer's model (serving_default for the
Evaluator, compare, embed), its threshold and limits, and writes warmup requests for every
signature, identify included; its gallery record (fingerprint, identities, exemplars) is in the
SavedModel's assets/gallery.json and in the artifact's custom properties."""

from __future__ import annotations

import hashlib
import json
import os

from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import channel, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from siamese_tfx.components.contract.config import GalleryConfig, section_to_dict
from siamese_tfx.components.gallery_builder import executor


class GalleryBuilderSpec(ComponentSpec):
    PARAMETERS = {
        executor.GALLERY_CONFIG_KEY: ExecutionParameter(type=str),
        executor.MODEL_NAME_KEY: ExecutionParameter(type=str),
        executor.GALLERY_STAMP_KEY: ExecutionParameter(type=str),
    }
    INPUTS = {
        executor.MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
    }
    OUTPUTS = {
        executor.GALLERY_MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
    }


def gallery_stamp(path: str) -> str:
    """sha256 over the name, size and modification time of every file of the gallery at `path`
    (a folder, or a manifest and the folder it sits in), "" when `path` is not readable here
    (a URI, or a path only the cluster's pods see). The component's cache key includes it, so
    a gallery changed under the same path is built again; the build itself fingerprints the
    files' contents."""
    if not path or "://" in path or not os.path.exists(path):
        return ""
    root = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    digest = hashlib.sha256()
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            stat = os.stat(os.path.join(folder, name))
            relative = os.path.relpath(os.path.join(folder, name), root)
            digest.update(f"{relative}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


class GalleryBuilder(base_component.BaseComponent):
    """The Trainer's model with the gallery and `identify` (euclidean head only)."""

    SPEC_CLASS = GalleryBuilderSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, model: channel.BaseChannel, gallery: GalleryConfig, model_name: str):
        """Args:
          model: the Trainer's Model.
          gallery: the gallery (its path must be readable where the component runs), how an
            identity with several exemplars is scored, and identify's k.
          model_name: the name the model is served under (its warmup requests carry it).
        """
        spec = GalleryBuilderSpec(
            model=model,
            gallery_config=json.dumps(section_to_dict(gallery), sort_keys=True),
            model_name=model_name,
            gallery_stamp=gallery_stamp(gallery.gallery_path),
            gallery_model=channel.Channel(type=standard_artifacts.Model),
        )
        super().__init__(spec=spec)
