"""Runner-only settings for Kubeflow Pipelines: image, resources, Beam runner, storage, and the
TFJob the Trainer step creates when it trains on several machines.

The pipeline's own settings stay in `PipelineConfig`; this frozen dataclass only holds what the
Kubeflow runner adds around it. Like the pipeline's sections, every field carries the help text
the CLI shows, and nothing here touches the environment or the file system.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from siamese_tfx.components.contract.config import check, option
from siamese_tfx.kubeflow import tfjob
from siamese_tfx.pipeline.config import BeamConfig

AUTO_RUNNER = "auto"
DISTRIBUTED_RUNNERS = ("DataflowRunner", "FlinkRunner", "SparkRunner")
BEAM_RUNNERS = ("DirectRunner",) + DISTRIBUTED_RUNNERS
# What a distributed runner needs set before `auto` picks it.
_RUNNER_SETTINGS = {"DataflowRunner": "dataflow_project", "FlinkRunner": "flink_master",
                    "SparkRunner": "spark_master_url"}
TFJOB_RESTART_POLICIES = ("OnFailure", "ExitCode", "Never")
TFJOB_CLEAN_POD_POLICIES = ("None", "Running", "All")
SHARED_STORAGE_SCHEMES = ("gs://", "s3://", "hdfs://")


@dataclass(frozen=True)
class KubeflowConfig(BeamConfig):
    """How the pipeline runs on Kubeflow Pipelines (the pipeline itself is PipelineConfig). The
    portable runners' environment and the extra Beam arguments are BeamConfig's, as for a local
    run."""

    image: str = option("", "Pipeline image (built from the repo's Dockerfile), e.g. "
                      "ghcr.io/acme/siamese-tfx:0.1.0. Every component runs in it.")
    beam_runner: str = option(
        AUTO_RUNNER, "Beam runner of the Beam components (PairExampleGen, StatisticsGen, "
        "Transform, Evaluator). auto: DataflowRunner if dataflow_project is set, FlinkRunner if "
        "flink_master, SparkRunner if spark_master_url, else DirectRunner inside each "
        "component's pod (multi_processing, one process per CPU of the pod).",
        choices=(AUTO_RUNNER,) + BEAM_RUNNERS)
    beam_temp_location: str = option("", "Beam temp/staging location on shared storage (gs://, "
                                   "s3://). Required for Dataflow.")
    dataflow_project: str = option("", "Google Cloud project of the Dataflow jobs.")
    dataflow_region: str = option("", "Region of the Dataflow jobs, e.g. europe-west4.")
    flink_master: str = option("", "Flink JobManager address host:port (FlinkRunner).")
    spark_master_url: str = option("", "Spark master URL, e.g. spark://spark-master:7077 "
                                 "(SparkRunner).")
    trainer_gpu_type: str = option(
        "nvidia.com/gpu", "Accelerator type of the Trainer: the Kubernetes resource name on "
        "Kubeflow Pipelines (nvidia.com/gpu), or a Vertex AI type (NVIDIA_TESLA_T4).")
    trainer_gpu_count: int = option(1, "GPUs of the Trainer's worker (MirroredStrategy across "
                                  "them); 0 trains on CPU.")
    trainer_cpu: float = option(8.0, "CPU limit of the Trainer (cores); of each TFJob replica "
                              "when trainer_workers > 1.")
    trainer_memory_gb: float = option(32.0, "Memory limit of the Trainer (GB); of each TFJob "
                                    "replica when trainer_workers > 1.")
    trainer_workers: int = option(
        1, "Machines the Trainer trains on. 1: the Trainer step is one pod (MirroredStrategy "
        "across its GPUs). N > 1: the step is a small launcher pod that runs the Trainer as a "
        "Kubeflow Training Operator TFJob of a Chief and N-1 Workers "
        "(MultiWorkerMirroredStrategy), each with the Trainer's GPUs, CPU and memory.")
    tfjob_namespace: str = option("", "Namespace of the TFJob (empty: the pipeline run's).")
    tfjob_service_account: str = option(
        "", "Service account of the TFJob's pods (empty: the Trainer step pod's own, i.e. the "
        "pipeline's, which must reach the pipeline root).")
    tfjob_node_selector: tuple[str, ...] = option(
        (), "Node label the TFJob's pods must run on, key=value, e.g. "
        "cloud.google.com/gke-accelerator=nvidia-tesla-t4.")
    tfjob_tolerations: tuple[str, ...] = option(
        (), "Taint the TFJob's pods tolerate: key=value:Effect, key:Effect (any value), or a "
        'Kubernetes toleration as JSON, e.g. {"key": "nvidia.com/gpu", "operator": "Exists"}.')
    tfjob_pod_labels: tuple[str, ...] = option(
        (), "Label of the TFJob's pods, key=value (e.g. the label a PodDefault that mounts the "
        "pipeline's volume selects).")
    tfjob_restart_policy: str = option(
        "OnFailure", "What the operator does when a replica's container fails: OnFailure "
        "restarts it (its MultiWorkerMirrored peers fail with it and restart too, then all "
        "resume from the last backup), ExitCode only on exit codes >= 128 (killed, "
        "preempted), Never fails the job.", choices=TFJOB_RESTART_POLICIES)
    tfjob_backoff_limit: int = option(3, "Replica restarts before the TFJob fails "
                                    "(runPolicy.backoffLimit).")
    tfjob_active_deadline_seconds: int = option(
        0, "The TFJob fails once it has run this long (runPolicy.activeDeadlineSeconds); 0: no "
        "limit.")
    tfjob_ttl_seconds_after_finished: int = option(
        86400, "The operator deletes a finished TFJob and its pods this long after it ended "
        "(runPolicy.ttlSecondsAfterFinished); -1 keeps them.")
    tfjob_clean_pod_policy: str = option(
        "Running", "Which pods the operator deletes when the TFJob ends (runPolicy."
        "cleanPodPolicy): Running (still running ones; failed pods stay for their logs), All, "
        "None.", choices=TFJOB_CLEAN_POD_POLICIES)
    launcher_cpu: float = option(0.5, "CPU limit of the launcher pod (trainer_workers > 1).")
    launcher_memory_gb: float = option(1.0, "Memory limit of the launcher pod (trainer_workers > "
                                     "1; it imports TensorFlow only to copy from gs:// etc.).")
    tfjob_poll_seconds: float = option(10.0, "How often the launcher reads the TFJob's status.")
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
        super().__post_init__()
        for f in dataclasses.fields(self):  # A JSON config gives lists.
            if isinstance(f.default, tuple) and isinstance(getattr(self, f.name), list):
                object.__setattr__(self, f.name, tuple(getattr(self, f.name)))
        if self.beam_runner == AUTO_RUNNER:
            object.__setattr__(self, "beam_runner", _auto_runner(self))
        check(self.beam_runner in BEAM_RUNNERS,
               f"beam_runner must be one of {(AUTO_RUNNER,) + BEAM_RUNNERS}")
        check(self.trainer_gpu_count >= 0, "trainer_gpu_count must be >= 0")
        check(self.trainer_gpu_count == 0 or bool(self.trainer_gpu_type),
               "trainer_gpu_type is required when trainer_gpu_count > 0")
        for name in ("trainer_cpu", "trainer_memory_gb", "component_cpu", "component_memory_gb",
                     "launcher_cpu", "launcher_memory_gb", "tfjob_poll_seconds"):
            check(getattr(self, name) > 0, f"{name} must be > 0")
        check(self.trainer_workers >= 1, "trainer_workers must be >= 1")
        check(self.tfjob_backoff_limit >= 0, "tfjob_backoff_limit must be >= 0")
        check(self.tfjob_active_deadline_seconds >= 0,
               "tfjob_active_deadline_seconds must be >= 0 (0: no limit)")
        check(self.tfjob_ttl_seconds_after_finished >= -1,
               "tfjob_ttl_seconds_after_finished must be >= -1 (-1: keep)")
        check(self.tfjob_restart_policy in TFJOB_RESTART_POLICIES,
               f"tfjob_restart_policy must be one of {TFJOB_RESTART_POLICIES}")
        check(self.tfjob_clean_pod_policy in TFJOB_CLEAN_POD_POLICIES,
               f"tfjob_clean_pod_policy must be one of {TFJOB_CLEAN_POD_POLICIES}")
        tfjob.parse_key_values(self.tfjob_node_selector, "tfjob_node_selector")
        tfjob.parse_key_values(self.tfjob_pod_labels, "tfjob_pod_labels")
        for toleration in self.tfjob_tolerations:
            try:
                tfjob.parse_toleration(toleration)
            except ValueError as e:
                raise ValueError(f"tfjob_tolerations: {e}") from None
        if self.trainer_workers > 1 and self.trainer_gpu_count:
            check("/" in self.trainer_gpu_type,
                   f"trainer_gpu_type {self.trainer_gpu_type!r}: TFJob replicas need the "
                   "Kubernetes resource name of the GPU (e.g. nvidia.com/gpu)")
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


def _auto_runner(kf: KubeflowConfig) -> str:
    """The distributed runner whose settings are given, else DirectRunner (in the pod)."""
    configured = [runner for runner, name in _RUNNER_SETTINGS.items() if getattr(kf, name)]
    check(len(configured) <= 1, f"settings of several Beam runners are given ({configured}): "
           "choose one with beam_runner")
    return configured[0] if configured else "DirectRunner"


def is_shared_path(path: str) -> bool:
    """True for object storage URIs and absolute paths (a PVC mounted at the same path in every
    pod); relative paths and file:// never reach the cluster's pods."""
    return path.startswith(SHARED_STORAGE_SCHEMES) or path.startswith("/")

