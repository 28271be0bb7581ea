"""PairExampleGen: labelled image pairs from class folders or a pairs manifest, on Beam.

It reuses TFX's FileBasedDriver, so like CsvExampleGen it fingerprints the input files (size
and mtime) and a run on unchanged inputs reuses the cached output.
"""

from __future__ import annotations

import json
import os

from tfx.components.example_gen import driver
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.proto import example_gen_pb2, range_config_pb2
from tfx.types import artifact, channel, standard_artifacts, standard_component_specs
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from siamese_tfx.components.contract.config import DataConfig, section_to_dict
from siamese_tfx.components.pair_example_gen import executor
from siamese_tfx.components.pair_example_gen.inputs import class_pattern


class QuarantineReport(artifact.Artifact):
    """Inputs that did not become examples, each with its file, row and reason
    (quarantine.csv, quarantine.json) and the run's counts (summary.json)."""

    TYPE_NAME = "siamese_tfx.QuarantineReport"


class PairExampleGenSpec(ComponentSpec):
    PARAMETERS = {
        executor.INPUT_BASE_KEY: ExecutionParameter(type=str),
        # Read by FileBasedDriver only: its split patterns name the files to fingerprint.
        standard_component_specs.INPUT_CONFIG_KEY: ExecutionParameter(type=example_gen_pb2.Input),
        standard_component_specs.RANGE_CONFIG_KEY: ExecutionParameter(
            type=range_config_pb2.RangeConfig, optional=True
        ),
        executor.DATA_CONFIG_KEY: ExecutionParameter(type=str),
    }
    INPUTS = {}
    OUTPUTS = {
        executor.EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
        executor.QUARANTINE_KEY: ChannelParameter(type=QuarantineReport),
    }


class PairExampleGen(base_beam_component.BaseBeamComponent):
    """Writes train/eval splits of tf.Examples with features left_image, right_image (PNG
    bytes), label (int64, 1 = same class), left_class and right_class; the splits share no
    class."""

    SPEC_CLASS = PairExampleGenSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)
    DRIVER_CLASS = driver.FileBasedDriver

    def __init__(self, data: DataConfig):
        if not data.image_root:
            raise ValueError("DataConfig.image_root is required")
        if data.manifest:
            patterns = {"manifest": data.manifest}
        else:
            patterns = {"images": os.path.relpath(class_pattern("", data.class_depth), "")}
        input_config = example_gen_pb2.Input(
            splits=[example_gen_pb2.Input.Split(name=n, pattern=p) for n, p in patterns.items()]
        )
        spec = PairExampleGenSpec(
            input_base=data.image_root,
            input_config=input_config,
            data_config=json.dumps(section_to_dict(data), sort_keys=True),
            examples=channel.Channel(type=standard_artifacts.Examples),
            quarantine=channel.Channel(type=QuarantineReport),
        )
        super().__init__(spec=spec)
