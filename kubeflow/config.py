"""Runner-only settings for Kubeflow Pipelines: image, resources, Beam runner, storage.

The pipeline's own settings stay in `PipelineConfig`; this frozen dataclass only holds what the
Kubeflow runner adds around it. Like the pipeline's sections, every field carries the help text
the CLI shows, and nothing here touches the environment or the file system.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from siamese_tfx.components.contract.config import check, option

BEAM_RUNNERS = ("DataflowRunner", "FlinkRunner", "SparkRunner")
SHARED_STORAGE_SCHEMES = ("gs://", "s3://", "hdfs://")


@dataclass(frozen=True)
class KubeflowConfig:
    """How the pipeline runs on Kubeflow Pipelines (the pipeline itself is PipelineConfig)."""

    image: str = option("", "Pipeline image (built from the repo's Dockerfile), e.g. "
                      "ghcr.io/acme/siamese-tfx:0.1.0. Every component runs in it.")
    beam_runner: str = option("DataflowRunner", "Beam runner of the Beam components "
                            "(PairExampleGen, StatisticsGen, Transform, Evaluator).",
                            choices=BEAM_RUNNERS)
    beam_temp_location: str = option("", "Beam temp/staging location on shared storage (gs://, "
                                   "s3://). Required for Dataflow.")
    dataflow_project: str = option("", "Google Cloud project of the Dataflow jobs.")
    dataflow_region: str = option("", "Region of the Dataflow jobs, e.g. europe-west4.")
    flink_master: str = option("", "Flink JobManager address host:port (FlinkRunner).")
    spark_master_url: str = option("", "Spark master URL, e.g. spark://spark-master:7077 "
                                 "(SparkRunner).")
    beam_environment_type: str = option(
        "EXTERNAL", "Portable runners (Flink, Spark): how the SDK harness runs. EXTERNAL uses a "
        "Beam worker pool sidecar running the pipeline image.",
        choices=("EXTERNAL", "DOCKER", "PROCESS"))
    beam_environment_config: str = option(
        "localhost:50000", "Portable runners: the worker pool address (EXTERNAL), or the SDK "
        "image (DOCKER; empty = the pipeline image).")
    beam_extra_args: tuple[str, ...] = option(
        (), "Further Beam pipeline arguments, appended as given; on the command line use the = "
        "form: --beam-extra-args=--max_num_workers=20.")
    trainer_gpu_type: str = option(
        "nvidia.com/gpu", "Accelerator type of the Trainer: the Kubernetes resource name on "
        "Kubeflow Pipelines (nvidia.com/gpu), or a Vertex AI type (NVIDIA_TESLA_T4).")
    trainer_gpu_count: int = option(1, "GPUs of the Trainer's worker (MirroredStrategy across "
                                  "them); 0 trains on CPU.")
    trainer_cpu: float = option(8.0, "CPU limit of the Trainer (cores).")
    trainer_memory_gb: float = option(32.0, "Memory limit of the Trainer (GB).")
    component_cpu: float = option(2.0, "CPU limit of every other component (cores). Their heavy "
                                "work runs on the Beam runner.")
    component_memory_gb: float = option(8.0, "Memory limit of every other component (GB).")
    image_source_dir: str = option(
        "/pipeline", "Where the Dockerfile copies the repo in the image (its WORKDIR): files the "
        "pipeline names by repo path, like the curated schema, are read from there.")
    cache_ingestion: bool = option(
        False, "Let KFP's cache reuse PairExampleGen's output. Open-source KFP keys the cache on "
        "parameters only (it does not run the input-fingerprint hook), so a scheduled run on new "
        "data under the same path would reuse stale examples: off by default.")

    def __post_init__(self) -> None:
        check(self.beam_runner in BEAM_RUNNERS,
               f"beam_runner must be one of {BEAM_RUNNERS} (DirectRunner is for `siamese-tfx "
               "run`, the local runner)")
        check(self.trainer_gpu_count >= 0, "trainer_gpu_count must be >= 0")
        check(self.trainer_gpu_count == 0 or bool(self.trainer_gpu_type),
               "trainer_gpu_type is required when trainer_gpu_count > 0")
        for name in ("trainer_cpu", "trainer_memory_gb", "component_cpu", "component_memory_gb"):
            check(getattr(self, name) > 0, f"{name} must be > 0")
        if self.beam_runner == "DataflowRunner":
            check(bool(self.dataflow_project and self.dataflow_region),
                   "DataflowRunner needs dataflow_project and dataflow_region")
            check(self.beam_temp_location.startswith("gs://"),
                   "DataflowRunner needs beam_temp_location on gs://")
        if self.beam_runner == "FlinkRunner":
            check(bool(self.flink_master), "FlinkRunner needs flink_master")
        if self.beam_runner == "SparkRunner":
            check(bool(self.spark_master_url), "SparkRunner needs spark_master_url")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def is_shared_path(path: str) -> bool:
    """True for object storage URIs and absolute paths (a PVC mounted at the same path in every
    pod); relative paths and file:// never reach the cluster's pods."""
    return path.startswith(SHARED_STORAGE_SCHEMES) or path.startswith("/")

