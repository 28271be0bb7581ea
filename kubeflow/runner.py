"""Compiles the pipeline for Kubeflow Pipelines: TFX's KubeflowV2DagRunner -> KFP v2 YAML.

The pipeline is the one `pipeline.pipeline.create_pipeline` builds for the local runner; this
module only adds what a cluster needs around it:

- the pipeline image, for every component;
- resources per component through `with_platform_config` (a KFP `ResourceSpec`, which the V2
  runner copies into each container spec): GPUs, CPU and memory for Trainer, CPU and memory for
  the others;
- Beam arguments: a distributed runner (Dataflow, Flink or Spark), or DirectRunner inside each
  component's pod (multi_processing, one process per CPU the pod asks for);
- with `trainer_workers` > 1, the Trainer step becomes a small launcher pod
  (`kubeflow/launcher.py`) that runs the Trainer's own command as a TFJob of a Chief and
  Workers, each with the Trainer's GPUs, CPU and memory;
- the pipeline root and serving directory, which must be on storage every pod sees.

What the V2 runner gets wrong for this pipeline, fixed up in the compiled spec:

- The V2 runner only recognises `FileBasedExampleGen` subclasses as example gens: for them it
  adds a `lifecycle.preCacheCheck` hook that runs TFX's file-based driver (span and input
  fingerprint) before the cache lookup. PairExampleGen reuses FileBasedDriver through
  `DRIVER_CLASS`, which the V2 runner ignores, so the same hook is added here.
- Open-source KFP does not run that hook (Vertex AI Pipelines does) and keys its cache on the
  task's parameters only, so with caching a scheduled run would reuse last run's examples even
  when the images changed. PairExampleGen's cache is off unless `cache_ingestion` is set; every
  later task sees a new Examples artifact, so its cache key changes with the data.
- Resolver tasks lose the order `add_upstream_node` gave their node: every task is made to wait
  for its node's upstream nodes again.

The output is the YAML PipelineSpec that `kfp.Client().upload_pipeline` accepts (TFX's default
JSON file is the PipelineJob wrapper, which the KFP API rejects).
"""

from __future__ import annotations

import dataclasses
import json
import os
import posixpath
from typing import Any

import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2
from tfx import version as tfx_version
from tfx.orchestration import pipeline as tfx_pipeline
from tfx.orchestration.kubeflow.v2 import kubeflow_v2_dag_runner

from siamese_tfx.components.contract import features
from siamese_tfx.kubeflow import tfjob
from siamese_tfx.kubeflow.config import KubeflowConfig, is_shared_path
from siamese_tfx.pipeline import pipeline as pipeline_lib
from siamese_tfx.pipeline.config import PipelineConfig

ResourceSpec = pipeline_spec_pb2.PipelineDeploymentConfig.PipelineContainerSpec.ResourceSpec

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What TFX's V2 step builder runs before the cache check of a FileBasedExampleGen.
EXAMPLE_GEN_DRIVER_COMMAND = (
    "python", "-m", "tfx.orchestration.kubeflow.v2.file_based_example_gen.driver")
LAUNCHER_COMMAND = ("python", "-m", "siamese_tfx.kubeflow.launcher")
DIRECT_NUM_WORKERS = "--direct_num_workers="


def direct_num_workers(cpu: float) -> int:
    """DirectRunner processes for a pod of `cpu` cores: one per whole core, at least one."""
    return max(1, int(cpu))


def beam_pipeline_args(kf: KubeflowConfig) -> list[str]:
    """Beam arguments of every Beam component for the configured runner. DirectRunner runs in
    the component's pod, one process per CPU (`compile_spec` sets each pod's own count)."""
    args = [f"--runner={kf.beam_runner}"]
    if kf.beam_temp_location:
        args.append(f"--temp_location={kf.beam_temp_location}")
    if kf.beam_runner == "DirectRunner":
        args += ["--direct_running_mode=multi_processing",
                 f"{DIRECT_NUM_WORKERS}{direct_num_workers(kf.component_cpu)}"]
    elif kf.beam_runner == "DataflowRunner":
        args += [
            f"--project={kf.dataflow_project}",
            f"--region={kf.dataflow_region}",
            # Dataflow workers run the pipeline image, so they have the project's code and pins.
            f"--sdk_container_image={kf.image}",
            "--experiments=use_runner_v2",
        ]
    else:
        args += kf.environment_args(
            default_config=kf.image if kf.beam_environment_type == "DOCKER" else "")
        if kf.beam_runner == "FlinkRunner":
            args.append(f"--flink_master={kf.flink_master}")
        else:
            args.append(f"--spark_master_url={kf.spark_master_url}")
    return args + list(kf.beam_extra_args)


def resource_spec(cpu: float, memory_gb: float, gpu_type: str = "",
                  gpu_count: int = 0) -> ResourceSpec:
    """A KFP ResourceSpec with both the numeric fields (older KFP backends and Vertex) and the
    string `resource_*` fields KFP 2.x writes itself."""
    spec = ResourceSpec(
        cpu_limit=cpu, memory_limit=memory_gb,
        resource_cpu_limit=f"{cpu:g}", resource_memory_limit=f"{memory_gb:g}G",
    )
    if gpu_count:
        spec.accelerator.CopyFrom(ResourceSpec.AcceleratorConfig(
            type=gpu_type, count=gpu_count, resource_type=gpu_type,
            resource_count=str(gpu_count),
        ))
    return spec


def check_locations(config: PipelineConfig) -> None:
    """Refuses paths the cluster's pods cannot reach (relative or file:// paths; a gallery
    anywhere but an absolute path)."""
    optional = {"schema_path": config.validation.schema_path}  # Empty: the repo's schema.
    for name, path in (("pipeline_root", config.pipeline_root),
                       ("serving_dir", config.serving_dir),
                       ("image_root", config.data.image_root), *optional.items()):
        if (path or name not in optional) and not is_shared_path(path):
            raise ValueError(
                f"{name} {path!r} must be on shared storage: gs://, s3://, hdfs://, or an "
                "absolute path on a volume mounted at the same path in every pod")
    gallery = config.gallery.gallery_path  # Empty: no GalleryBuilder.
    if gallery and not gallery.startswith("/"):
        raise ValueError(
            f"gallery_path {gallery!r} must be an absolute path in the GalleryBuilder pod (a "
            "volume mounted at the same path in every pod, or the image): the gallery is read "
            "with local file access, not from object storage")


def in_image(path: str, kf: KubeflowConfig) -> str:
    """The path in the image of a file under this repo (the Dockerfile copies the repo to
    `kf.image_source_dir`); compiling on a laptop must not bake the laptop's paths in."""
    relative = os.path.relpath(os.path.abspath(path), REPO_ROOT)
    if relative.startswith(".."):
        raise ValueError(f"{path} is outside the repo, so not in the image")
    return posixpath.join(kf.image_source_dir, *relative.split(os.sep))


def for_cluster(config: PipelineConfig, kf: KubeflowConfig) -> PipelineConfig:
    """`config` with the repo's curated schema (the default) named by its path in the image."""
    if config.validation.schema_path:
        return config
    validation = dataclasses.replace(config.validation,
                                     schema_path=in_image(features.SCHEMA_FILE, kf))
    return dataclasses.replace(config, validation=validation)


def build_pipeline(config: PipelineConfig, kf: KubeflowConfig) -> tfx_pipeline.Pipeline:
    """The shared pipeline, with Beam arguments and every component's resources."""
    check_locations(config)
    config = for_cluster(config, kf)
    pipeline = pipeline_lib.create_pipeline(
        config, metadata_connection_config=None, beam_pipeline_args=beam_pipeline_args(kf))
    for component in pipeline.components:
        if not hasattr(component, "with_platform_config"):
            continue  # Resolvers and importers are ML Metadata operations, not pods.
        if component.id == pipeline_lib.TRAINER:
            component.with_platform_config(resource_spec(
                kf.trainer_cpu, kf.trainer_memory_gb, kf.trainer_gpu_type, kf.trainer_gpu_count))
        else:
            component.with_platform_config(
                resource_spec(kf.component_cpu, kf.component_memory_gb))
    return pipeline


def _add_example_gen_driver(spec: dict[str, Any], beam_args: list[str],
                            cache_ingestion: bool) -> None:
    """Gives PairExampleGen what the V2 runner gives a FileBasedExampleGen (see module doc)."""
    task = spec["root"]["dag"]["tasks"][pipeline_lib.EXAMPLE_GEN]
    component = spec["components"][task["componentRef"]["name"]]
    container = _executor_container(spec, pipeline_lib.EXAMPLE_GEN)
    inputs_spec = json_format.ParseDict(
        component.get("inputDefinitions", {}), pipeline_spec_pb2.ComponentInputsSpec())
    container["lifecycle"] = {"preCacheCheck": {
        "command": list(EXAMPLE_GEN_DRIVER_COMMAND),
        "args": ["--json_serialized_invocation_args", "{{$}}",
                 "--json_serialized_inputs_spec_args",
                 json_format.MessageToJson(inputs_spec, sort_keys=True)] + beam_args,
    }}
    task["cachingOptions"] = {"enableCache": cache_ingestion}


def _executor_container(spec: dict[str, Any], node_id: str) -> dict[str, Any]:
    task = spec["root"]["dag"]["tasks"][node_id]
    component = spec["components"][task["componentRef"]["name"]]
    return spec["deploymentSpec"]["executors"][component["executorLabel"]]["container"]


def _direct_workers_per_pod(spec: dict[str, Any]) -> None:
    """DirectRunner's --direct_num_workers = the CPU of the pod the arguments run in."""
    for executor in spec["deploymentSpec"]["executors"].values():
        container = executor.get("container")
        if not container:
            continue
        workers = direct_num_workers(float(container.get("resources", {}).get("cpuLimit", 1)))
        hook = container.get("lifecycle", {}).get("preCacheCheck", {})
        for args in (container.get("args", []), hook.get("args", [])):
            args[:] = [f"{DIRECT_NUM_WORKERS}{workers}" if a.startswith(DIRECT_NUM_WORKERS)
                       else a for a in args]


def launcher_config(kf: KubeflowConfig, image: str, command: list[str]) -> tfjob.LauncherConfig:
    """The TFJob settings the Trainer's launcher receives."""
    return tfjob.LauncherConfig(
        component=pipeline_lib.TRAINER, workers=kf.trainer_workers, image=image,
        command=tuple(command), cpu=kf.trainer_cpu, memory_gb=kf.trainer_memory_gb,
        gpu_type=kf.trainer_gpu_type if kf.trainer_gpu_count else "",
        gpu_count=kf.trainer_gpu_count, namespace=kf.tfjob_namespace,
        service_account=kf.tfjob_service_account,
        node_selector=tfjob.parse_key_values(kf.tfjob_node_selector, "tfjob_node_selector"),
        tolerations=tuple(tfjob.parse_toleration(t) for t in kf.tfjob_tolerations),
        pod_labels=tfjob.parse_key_values(kf.tfjob_pod_labels, "tfjob_pod_labels"),
        restart_policy=kf.tfjob_restart_policy, backoff_limit=kf.tfjob_backoff_limit,
        active_deadline_seconds=kf.tfjob_active_deadline_seconds,
        ttl_seconds_after_finished=kf.tfjob_ttl_seconds_after_finished,
        clean_pod_policy=kf.tfjob_clean_pod_policy, poll_seconds=kf.tfjob_poll_seconds)


def _launch_trainer_as_tfjob(spec: dict[str, Any], kf: KubeflowConfig) -> None:
    """Makes the Trainer step the TFJob launcher: its command becomes the launcher's (the
    args, with the ExecutorInput KFP puts in, stay as they were and reach every replica), its
    resources the launcher's; the GPUs, CPU and memory move into the job's replicas."""
    container = _executor_container(spec, pipeline_lib.TRAINER)
    config = launcher_config(kf, container["image"], container["command"])
    # The manifest the launcher will build, checked now so a bad setting fails the compile.
    sample = tfjob.build_tfjob(
        config, tfjob.job_name(config.component, "compile"), config.namespace or "default",
        {tfjob.CHIEF: container["args"], tfjob.WORKER: container["args"]}, "compile")
    tfjob.raise_for_tfjob(sample)
    container["command"] = [*LAUNCHER_COMMAND, "--config", config.to_json(), "--"]
    container["resources"] = json_format.MessageToDict(
        resource_spec(kf.launcher_cpu, kf.launcher_memory_gb))


def task_names(spec: dict[str, Any], node_id: str) -> list[str]:
    """The compiled tasks of pipeline node `node_id` (a resolver may become several, named
    <node id>-...)."""
    return sorted(name for name in spec["root"]["dag"]["tasks"]
                  if name == node_id or name.startswith(node_id + "-"))


def _keep_upstream_order(spec: dict[str, Any], pipeline: tfx_pipeline.Pipeline) -> None:
    """Makes every task wait for its node's upstream nodes. The V2 runner drops the explicit
    `add_upstream_node` order of resolver nodes (their tasks get no dependencies), so e.g. a
    resolver could query ML Metadata before the importer it was ordered after has run."""
    tasks = spec["root"]["dag"]["tasks"]
    for node in pipeline.components:
        upstream = [t for u in node.upstream_nodes for t in task_names(spec, u.id)]
        for name in task_names(spec, node.id):
            deps = set(tasks[name].get("dependentTasks", [])) | set(upstream)
            if deps:
                tasks[name]["dependentTasks"] = sorted(deps)


def compile_spec(config: PipelineConfig, kf: KubeflowConfig) -> dict[str, Any]:
    """Compiles the pipeline to a PipelineSpec (as its JSON dict)."""
    if not kf.image:
        raise ValueError("KubeflowConfig.image (the pipeline image) is required")
    pipeline = build_pipeline(config, kf)
    runner = kubeflow_v2_dag_runner.KubeflowV2DagRunner(
        config=kubeflow_v2_dag_runner.KubeflowV2DagRunnerConfig(
            display_name=config.pipeline_name, default_image=kf.image,
            use_pipeline_spec_2_1=True),
    )
    job = runner.run(pipeline, write_out=False)
    spec = job["pipelineSpec"]
    _add_example_gen_driver(spec, beam_pipeline_args(kf), kf.cache_ingestion)
    _direct_workers_per_pod(spec)
    if kf.trainer_workers > 1:
        _launch_trainer_as_tfjob(spec, kf)
    _keep_upstream_order(spec, pipeline)
    spec["defaultPipelineRoot"] = config.pipeline_root
    # Round trip through the proto: what is written is exactly what KFP will parse.
    return json_format.MessageToDict(json_format.ParseDict(spec, pipeline_spec_pb2.PipelineSpec()))


def compile_pipeline(config: PipelineConfig, kf: KubeflowConfig, output_path: str) -> str:
    """Writes the pipeline's YAML PipelineSpec to `output_path` (local path) and returns it."""
    spec = compile_spec(config, kf)
    header = (f"# PIPELINE DEFINITION\n# Name: {config.pipeline_name}\n"
              f"# Compiled by siamese-tfx (tfx {tfx_version.__version__}, KubeflowV2DagRunner)\n"
              f"# Image: {kf.image}\n# Beam: {json.dumps(beam_pipeline_args(kf))}\n")
    directory = os.path.dirname(os.path.abspath(output_path))
    os.makedirs(directory, exist_ok=True)
    with open(output_path, "w") as f:
        f.write(header)
        yaml.safe_dump(spec, f, sort_keys=True)
    return output_path


def load_spec(path: str) -> pipeline_spec_pb2.PipelineSpec:
    """Parses a compiled YAML file back into a PipelineSpec proto."""
    with open(path) as f:
        return json_format.ParseDict(yaml.safe_load(f), pipeline_spec_pb2.PipelineSpec())
