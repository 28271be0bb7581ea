"""The one typed configuration of a siamese-tfx run: `PipelineConfig`, and the Beam settings of
the runners (`BeamConfig`, shared with the Kubeflow runner; `LocalBeamConfig` for local runs).

`PipelineConfig` gathers the config sections of `siamese_tfx.components.contract.config` (one
per component) with the run's names and locations. The CLI builds it (its options are generated from the fields'
help text), `pipeline.create_pipeline` hands each section to the component that needs it.
Nothing here touches the environment or the file system.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from siamese_tfx.components.contract import signatures
from siamese_tfx.components.contract.config import (DataConfig, EvalConfig, GalleryConfig,
                                                    ImageConfig, InfraValidationConfig,
                                                    ModelConfig, ServingLimitsConfig,
                                                    TrainConfig, TrainerSettings,
                                                    ValidationConfig, check, from_dict, option)

# How a portable runner (Flink, Spark, Beam's portable job service) runs the SDK harness.
BEAM_ENVIRONMENT_TYPES = ("EXTERNAL", "DOCKER", "PROCESS", "LOOPBACK")
# Runners a local run can use: DirectRunner in this process, or a job service it submits to.
LOCAL_BEAM_RUNNERS = ("DirectRunner", "PortableRunner", "FlinkRunner", "SparkRunner")


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
    gallery: GalleryConfig = field(default_factory=GalleryConfig)

    def __post_init__(self) -> None:
        check(not self.gallery.enabled or self.model.head == "euclidean",
              f"gallery_path needs the euclidean head (got head {self.model.head!r}): identify "
              "searches the gallery by the Euclidean distance of embeddings")

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


@dataclass(frozen=True)
class BeamConfig:
    """The Beam settings `siamese-tfx run` and `siamese-tfx kubeflow compile` share (same
    options); each runner's config adds its own runner choice on top."""

    beam_environment_type: str = option(
        "EXTERNAL", "Portable runners (Flink, Spark, PortableRunner): how the SDK harness runs. "
        "EXTERNAL uses a Beam worker pool (on Kubeflow a sidecar running the pipeline image; "
        "locally `python -m apache_beam.runners.worker.worker_pool_main`), LOOPBACK this "
        "process.", choices=BEAM_ENVIRONMENT_TYPES)
    beam_environment_config: str = option(
        "localhost:50000", "Portable runners: the worker pool address (EXTERNAL), or the SDK "
        "image (DOCKER; on Kubeflow empty = the pipeline image).")
    beam_extra_args: tuple[str, ...] = option(
        (), "Further Beam pipeline arguments, appended as given (they win over the ones derived "
        "from the options above); use the = form: --beam-arg=--max_num_workers=20.",
        flags=("--beam-arg", "--beam-extra-args"))

    def __post_init__(self) -> None:
        if isinstance(self.beam_extra_args, list):  # A JSON config gives lists.
            object.__setattr__(self, "beam_extra_args", tuple(self.beam_extra_args))
        check(self.beam_environment_type in BEAM_ENVIRONMENT_TYPES,
              f"beam_environment_type must be one of {BEAM_ENVIRONMENT_TYPES}")

    def environment_args(self, default_config: str = "") -> list[str]:
        """--environment_type/--environment_config for a portable runner (`default_config`
        stands in for an empty environment config)."""
        args = [f"--environment_type={self.beam_environment_type}"]
        env_config = self.beam_environment_config or default_config
        if env_config and self.beam_environment_type != "LOOPBACK":
            args.append(f"--environment_config={env_config}")
        return args


@dataclass(frozen=True)
class LocalBeamConfig(BeamConfig):
    """Where a local run (`siamese-tfx run`) runs its Beam components (PairExampleGen,
    StatisticsGen, Transform, Evaluator)."""

    beam_runner: str = option(
        "DirectRunner", "Beam runner of the Beam components. DirectRunner: in this process "
        "(--beam-arg=--direct_running_mode=multi_processing --beam-arg=--direct_num_workers=N "
        "for N processes); PortableRunner: submitted to the job service at --beam-job-endpoint "
        "(Beam's `python -m apache_beam.runners.portability.local_job_service_main`, or a Flink "
        "or Spark job server), run by the workers of --beam-environment-type.",
        choices=LOCAL_BEAM_RUNNERS)
    beam_job_endpoint: str = option(
        "", "Job service address host:port (PortableRunner, required; Flink/Spark: their job "
        "server, else Beam starts one).")

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.beam_runner in LOCAL_BEAM_RUNNERS,
              f"beam_runner must be one of {LOCAL_BEAM_RUNNERS}")
        check(self.beam_runner != "PortableRunner" or bool(self.beam_job_endpoint),
              "PortableRunner needs beam_job_endpoint (host:port of the job service)")

    @property
    def is_portable(self) -> bool:
        return self.beam_runner != "DirectRunner"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
