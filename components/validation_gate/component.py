"""DataValidationGate: TFX's ExampleValidator only records anomalies; this component stops the
run on them (Transform runs after it), unless `ValidationConfig.allow_anomalies` overrides them
for the run."""

from __future__ import annotations

import json
from typing import Optional

from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import artifact, channel, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from siamese_tfx.components.contract.config import ValidationConfig, section_to_dict
from siamese_tfx.components.validation_gate import executor


class DataValidationResult(artifact.Artifact):
    """The gate's verdict (validation.json: anomalies, measured quantities with their bounds,
    whether the run overrode them) and the drift statistics the next run compares against.
    Custom properties: anomalies (count), overridden, anomaly_lines."""

    TYPE_NAME = "siamese_tfx.DataValidationResult"


class DataValidationGateSpec(ComponentSpec):
    PARAMETERS = {
        executor.VALIDATION_CONFIG_KEY: ExecutionParameter(type=str),
    }
    INPUTS = {
        executor.EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
        executor.STATISTICS_KEY: ChannelParameter(type=standard_artifacts.ExampleStatistics),
        executor.ANOMALIES_KEY: ChannelParameter(type=standard_artifacts.ExampleAnomalies),
        executor.PREVIOUS_RESULT_KEY: ChannelParameter(
            type=DataValidationResult, optional=True, allow_empty=True
        ),
    }
    OUTPUTS = {
        executor.RESULT_KEY: ChannelParameter(type=DataValidationResult),
    }


class DataValidationGate(base_component.BaseComponent):
    """Fails, naming every anomaly, when the examples are not fit to train on."""

    SPEC_CLASS = DataValidationGateSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(
        self,
        examples: channel.BaseChannel,
        statistics: channel.BaseChannel,
        anomalies: channel.BaseChannel,
        validation: ValidationConfig,
        previous_result: Optional[channel.BaseChannel] = None,
    ):
        """Args:
          examples: the examples (their image sizes and labels are measured for drift).
          statistics: their ExampleStatistics (StatisticsGen): split sizes, class balance.
          anomalies: ExampleValidator's ExampleAnomalies for those statistics.
          validation: the bounds and the override flag.
          previous_result: the previous accepted run's DataValidationResult (a Resolver's
            output, may be empty): drift is measured against its drift statistics.
        """
        spec = DataValidationGateSpec(
            examples=examples,
            statistics=statistics,
            anomalies=anomalies,
            previous_result=previous_result,
            validation_config=json.dumps(section_to_dict(validation), sort_keys=True),
            result=channel.Channel(type=DataValidationResult),
        )
        super().__init__(spec=spec)
