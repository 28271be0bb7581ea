"""InfraValidator: the candidate model must answer through the serving stack, as it does
in-process, before Pusher may push it.

TFX's own InfraValidator needs Docker (or the deprecated Kubeflow v1 runner's Kubernetes client);
this one starts the project's model server as a separate process inside its own container, so it
runs the same way on LocalDagRunner and on Kubeflow v2. It writes TFX's standard InfraBlessing
(the `blessed` custom property Pusher checks, INFRA_BLESSED / INFRA_NOT_BLESSED), plus
infra_validation.json (every request checked) and server.log, and the reason when not blessed.
"""

from __future__ import annotations

import json

from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import channel, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from siamese_tfx.components.contract.config import InfraValidationConfig, section_to_dict
from siamese_tfx.components.infra_validator import executor


class InfraValidatorSpec(ComponentSpec):
    PARAMETERS = {
        executor.INFRA_CONFIG_KEY: ExecutionParameter(type=str),
        executor.MODEL_NAME_KEY: ExecutionParameter(type=str),
    }
    INPUTS = {
        executor.MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
    }
    OUTPUTS = {
        executor.BLESSING_KEY: ChannelParameter(type=standard_artifacts.InfraBlessing),
    }


class InfraValidator(base_component.BaseComponent):
    """Blesses a model that a separate model server process loads, warms up and answers with
    finite outputs equal to the in-process ones, on its warmup requests and on every signature
    of the serving contract."""

    SPEC_CLASS = InfraValidatorSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, model: channel.BaseChannel, infra: InfraValidationConfig,
                 model_name: str):
        """Args:
          model: the Trainer's Model.
          infra: timeouts and the tolerance of the comparison.
          model_name: the name the model is served under (its warmup requests carry it).
        """
        spec = InfraValidatorSpec(
            model=model,
            infra_config=json.dumps(section_to_dict(infra), sort_keys=True),
            model_name=model_name,
            blessing=channel.Channel(type=standard_artifacts.InfraBlessing),
        )
        super().__init__(spec=spec)
