"""The one typed configuration of a siamese-tfx run: `PipelineConfig`.

It gathers the config sections of `siamese_tfx.components.contract.config` (one per component)
with the run's names and locations. The CLI builds it (its options are generated from the fields'
help text), `pipeline.create_pipeline` hands each section to the component that needs it.
Nothing here touches the environment or the file system.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from siamese_tfx.components.contract import signatures
from siamese_tfx.components.contract.config import (DataConfig, EvalConfig, ImageConfig,
                                                    InfraValidationConfig, ModelConfig,
                                                    ServingLimitsConfig, TrainConfig,
                                                    TrainerSettings, ValidationConfig, from_dict,
                                                    option)


@dataclass(frozen=True)
class PipelineConfig:
    """A whole run: names, locations and every component's settings."""

    pipeline_root: str = option("", "Where TFX writes component outputs (local path or URI).")
    serving_dir: str = option(
        "", "TF Serving base directory; Pusher writes <serving_dir>/<model_name>/<version>/."
    )
    pipeline_name: str = option("siamese-tfx", "Pipeline name (ML Metadata context).")
    model_name: str = option(signatures.DEFAULT_MODEL_NAME, "Model name under the serving directory.")
    enable_cache: bool = option(True, "Reuse a component's outputs when its inputs are unchanged.")
    data: DataConfig = field(default_factory=DataConfig)
    image: ImageConfig = field(default_factory=ImageConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    infra: InfraValidationConfig = field(default_factory=InfraValidationConfig)
    serving_limits: ServingLimitsConfig = field(default_factory=ServingLimitsConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "PipelineConfig":
        return from_dict(cls, values)

    def trainer_settings(self) -> TrainerSettings:
        """What the Trainer's run_fn receives (its custom_config)."""
        return TrainerSettings(image=self.image, model=self.model, train=self.train,
                               serving_limits=self.serving_limits, seed=self.data.seed,
                               model_name=self.model_name)
