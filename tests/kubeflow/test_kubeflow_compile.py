"""`siamese-tfx kubeflow compile`: the YAML parses as a KFP PipelineSpec and holds the whole
pipeline, in dependency order, with the image, resources and Beam arguments it was given."""

import json

import pytest
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2
from kubeflow_fixtures import COMPILE_ARGS, IMAGE, SHARED

from siamese_tfx.components.contract.config import DataConfig, GalleryConfig
from siamese_tfx.kubeflow import runner
from siamese_tfx.kubeflow.config import KubeflowConfig
from siamese_tfx.pipeline import pipeline as p
from siamese_tfx.pipeline.config import PipelineConfig

BEAM_COMPONENTS = (p.EXAMPLE_GEN, p.STATISTICS_GEN, p.SCHEMA_GEN, p.EXAMPLE_VALIDATOR,
                   p.TRANSFORM, p.EVALUATOR)


@pytest.fixture(scope="module")
def tfx_pipeline():
    """The TFX pipeline object the compile command compiled (same options)."""
    from siamese_tfx.kubeflow import cli
    from siamese_tfx.pipeline.cli import build_parser

    args = build_parser().parse_args(["kubeflow", "compile"] + COMPILE_ARGS)
    return runner.build_pipeline(cli.config_from_args(args),
                                 cli.kubeflow_config_from_args(args))


@pytest.fixture(scope="module")
def spec(compiled_spec_path) -> pipeline_spec_pb2.PipelineSpec:
    return runner.load_spec(compiled_spec_path)


def _container(spec, task_name):
    task = spec.root.dag.tasks[task_name]
    label = spec.components[task.component_ref.name].executor_label
    executor = json_format.MessageToDict(spec.deployment_spec)["executors"][label]
    return executor.get("container")


def test_yaml_is_a_pipeline_spec_not_the_pipeline_job_wrapper(compiled_spec_path):
    with open(compiled_spec_path) as f:
        document = yaml.safe_load(f)
    assert "pipelineSpec" not in document and "runtimeConfig" not in document
    spec = json_format.ParseDict(document, pipeline_spec_pb2.PipelineSpec())
    assert spec.pipeline_info.name == "siamese-kfp"
    assert spec.schema_version == "2.1.0"
    assert spec.default_pipeline_root == f"{SHARED}/root"


def _node_of(task_name, node_ids):
    """The pipeline node a compiled task comes from (a resolver may compile to several tasks,
    named <node id>-...)."""
    [node] = [n for n in node_ids if task_name == n or task_name.startswith(n + "-")]
    return node


def test_every_component_is_present_with_its_dependencies(spec, tfx_pipeline):
    upstream = {n.id: {u.id for u in n.upstream_nodes} for n in tfx_pipeline.components}
    tasks = {name: set(task.dependent_tasks) for name, task in spec.root.dag.tasks.items()}
    node_of = {task: _node_of(task, upstream) for task in tasks}
    # Without --gallery: every component but the optional GalleryBuilder.
    assert set(node_of.values()) == set(upstream) == (set(p.COMPONENT_ORDER)
                                                      - set(p.OPTIONAL_COMPONENTS))
    compiled = {n: {node_of[d] for t in tasks if node_of[t] == n for d in tasks[t]} - {n}
                for n in upstream}
    assert compiled == upstream
    # The data flow the README draws, pinned whatever else the pipeline gains.
    for node, before in [(p.STATISTICS_GEN, p.EXAMPLE_GEN), (p.TRAINER, p.TRANSFORM),
                         (p.EVALUATOR, p.TRAINER), (p.EVALUATOR, p.MODEL_RESOLVER),
                         (p.PUSHER, p.EVALUATOR), (p.INFRA_VALIDATOR, p.TRAINER),
                         (p.PUSHER, p.INFRA_VALIDATOR)]:
        assert before in compiled[node], (node, before)
    # COMPONENT_ORDER, the pipeline's declared order, runs every task after its upstream tasks.
    for node, deps in compiled.items():
        assert all(p.COMPONENT_ORDER.index(d) < p.COMPONENT_ORDER.index(node) for d in deps)


def test_trainer_requests_gpus_cpu_and_memory(spec):
    resources = _container(spec, p.TRAINER)["resources"]
    assert resources["accelerator"] == {"type": "nvidia.com/gpu", "count": "2",
                                        "resourceType": "nvidia.com/gpu",
                                        "resourceCount": "2"}
    assert resources["cpuLimit"] == 12 and resources["resourceCpuLimit"] == "12"
    assert resources["memoryLimit"] == 48 and resources["resourceMemoryLimit"] == "48G"


def test_other_components_get_their_resources_and_no_gpu(spec):
    for name in BEAM_COMPONENTS + (p.PUSHER,):
        resources = _container(spec, name)["resources"]
        assert "accelerator" not in resources, name
        assert (resources["cpuLimit"], resources["memoryLimit"]) == (3, 6), name


def test_every_container_runs_the_configured_image(spec, tfx_pipeline):
    containers = [_container(spec, name) for name in spec.root.dag.tasks]
    images = {c["image"] for c in containers if c}
    assert images == {IMAGE}
    pods = {_node_of(name, p.COMPONENT_ORDER) for name, c in zip(spec.root.dag.tasks, containers)
            if c}
    assert pods == {n.id for n in tfx_pipeline.components if hasattr(n, "with_platform_config")}


def test_beam_components_get_the_distributed_runner(spec):
    expected = runner.beam_pipeline_args(KubeflowConfig(
        image=IMAGE, beam_runner="FlinkRunner", flink_master="flink-jobmanager:8081",
        beam_temp_location=f"{SHARED}/beam-tmp"))
    assert "--runner=FlinkRunner" in expected and "--flink_master=flink-jobmanager:8081" in expected
    for name in BEAM_COMPONENTS:
        args = _container(spec, name)["args"]
        assert args[-len(expected):] == expected, name


def test_repo_schema_is_read_from_the_image_not_the_compiling_machine(spec):
    params = spec.root.dag.tasks[p.SCHEMA_GEN].inputs.parameters
    assert params["schema_file"].runtime_value.constant.string_value == (
        "/pipeline/components/contract/schema.pbtxt")


def test_pipeline_settings_reach_the_components(spec):
    params = spec.root.dag.tasks[p.PUSHER].inputs.parameters
    push = json.loads(params["push_destination"].runtime_value.constant.string_value)
    assert push["filesystem"]["base_directory"] == f"{SHARED}/serving/siamese"
    gen = spec.root.dag.tasks[p.EXAMPLE_GEN].inputs.parameters
    assert gen["input_base"].runtime_value.constant.string_value == f"{SHARED}/images"
    assert json.loads(gen["data_config"].runtime_value.constant.string_value)["class_depth"] == 2


def test_pair_example_gen_gets_tfx_file_based_driver_hook(spec):
    """The V2 runner adds the fingerprinting driver only to FileBasedExampleGen subclasses;
    the runner gives PairExampleGen exactly the hook TFX gives CsvExampleGen."""
    from tfx import v1 as tfx
    from tfx.orchestration.kubeflow.v2 import kubeflow_v2_dag_runner

    csv_gen = tfx.components.CsvExampleGen(input_base=f"{SHARED}/csv")
    reference = kubeflow_v2_dag_runner.KubeflowV2DagRunner(
        kubeflow_v2_dag_runner.KubeflowV2DagRunnerConfig(default_image=IMAGE,
                                                         use_pipeline_spec_2_1=True)
    ).run(tfx.dsl.Pipeline(pipeline_name="ref", pipeline_root=f"{SHARED}/ref",
                           components=[csv_gen], beam_pipeline_args=["--runner=FlinkRunner"]),
          write_out=False)["pipelineSpec"]
    ref_hook = reference["deploymentSpec"]["executors"]["CsvExampleGen_executor"]["container"][
        "lifecycle"]["preCacheCheck"]
    hook = _container(spec, p.EXAMPLE_GEN)["lifecycle"]["preCacheCheck"]
    assert hook["command"] == ref_hook["command"]
    assert hook["args"][:3] == ref_hook["args"][:3] == [
        "--json_serialized_invocation_args", "{{$}}", "--json_serialized_inputs_spec_args"]
    inputs = json.loads(hook["args"][3])["parameters"]
    assert {"input_base", "input_config"} <= set(inputs)
    assert "--runner=FlinkRunner" in hook["args"]
    # Open-source KFP does not run the hook: ingestion is never served from the cache.
    assert spec.root.dag.tasks[p.EXAMPLE_GEN].caching_options.enable_cache is False
    assert spec.root.dag.tasks[p.TRAINER].caching_options.enable_cache is True


def test_dataflow_args_run_workers_in_the_pipeline_image():
    args = runner.beam_pipeline_args(KubeflowConfig(
        image=IMAGE, dataflow_project="proj", dataflow_region="europe-west4",
        beam_temp_location="gs://b/tmp", beam_extra_args=("--max_num_workers=8",)))
    assert args == ["--runner=DataflowRunner", "--temp_location=gs://b/tmp", "--project=proj",
                    "--region=europe-west4", f"--sdk_container_image={IMAGE}",
                    "--experiments=use_runner_v2", "--max_num_workers=8"]


@pytest.mark.parametrize("settings, message", [
    (dict(beam_runner="DataflowRunner", beam_temp_location="gs://b/t"), "dataflow_project"),
    (dict(flink_master="f:1", spark_master_url="spark://s:7077"), "several Beam runners"),
    (dict(beam_runner="SparkRunner"), "spark_master_url"),
    (dict(beam_runner="FlinkRunner", flink_master="f:1", trainer_gpu_count=-1), "gpu_count"),
])
def test_kubeflow_config_refuses_bad_settings(settings, message):
    with pytest.raises(ValueError, match=message):
        KubeflowConfig(image=IMAGE, **settings)


@pytest.mark.parametrize("settings, runner_name", [
    (dict(), "DirectRunner"),
    (dict(dataflow_project="p", dataflow_region="r", beam_temp_location="gs://b/t"),
     "DataflowRunner"),
    (dict(flink_master="f:1"), "FlinkRunner"),
    (dict(spark_master_url="spark://s:7077"), "SparkRunner"),
    (dict(beam_runner="DirectRunner", flink_master="f:1"), "DirectRunner"),
])
def test_beam_runner_is_the_configured_distributed_runner_else_direct(settings, runner_name):
    assert KubeflowConfig(image=IMAGE, **settings).beam_runner == runner_name


def test_direct_runner_runs_one_process_per_cpu_of_the_pod():
    args = runner.beam_pipeline_args(KubeflowConfig(image=IMAGE, component_cpu=3.5))
    assert args == ["--runner=DirectRunner", "--direct_running_mode=multi_processing",
                    "--direct_num_workers=3"]
    assert runner.direct_num_workers(0.5) == 1


@pytest.mark.slow
def test_compiles_without_beam_options_to_direct_runner_in_each_pod(tmp_path):
    """The issue's command: no Beam options, storage on a PVC. DirectRunner runs inside each
    Beam component's pod in multi-processing mode, one process per CPU the pod asks for."""
    from siamese_tfx.pipeline.cli import main

    path = str(tmp_path / "p.yaml")
    assert main(["kubeflow", "compile", "--output", path, "--image", "IMG", "--pipeline-root",
                 "/mnt/pvc/root", "--serving-dir", "/mnt/pvc/serving", "--image-root",
                 "/mnt/pvc/data"]) == 0
    spec = runner.load_spec(path)
    defaults = KubeflowConfig()
    for name in BEAM_COMPONENTS + (p.TRAINER,):
        container = _container(spec, name)
        cpu = defaults.trainer_cpu if name == p.TRAINER else defaults.component_cpu
        assert container["resources"]["cpuLimit"] == cpu
        assert container["args"][-3:] == [
            "--runner=DirectRunner", "--direct_running_mode=multi_processing",
            f"--direct_num_workers={int(cpu)}"], name
    hook = _container(spec, p.EXAMPLE_GEN)["lifecycle"]["preCacheCheck"]["args"]
    assert hook[-3:] == ["--runner=DirectRunner", "--direct_running_mode=multi_processing",
                         "--direct_num_workers=2"]
    assert spec.default_pipeline_root == "/mnt/pvc/root"


@pytest.mark.parametrize("field", ["pipeline_root", "serving_dir", "image_root"])
def test_paths_the_pods_cannot_see_are_refused(field):
    values = dict(pipeline_root=f"{SHARED}/r", serving_dir="/mnt/pvc/serving")
    image_root = "gs://b/images"
    if field == "image_root":
        image_root = "data/images"
    else:
        values[field] = "runs/local"
    config = PipelineConfig(data=DataConfig(image_root=image_root), **values)
    with pytest.raises(ValueError, match=field):
        runner.check_locations(config)


def test_cli_compile_reports_config_errors(tmp_path, capfd):
    from siamese_tfx.pipeline.cli import main

    args = [a if a != "FlinkRunner" else "SparkRunner" for a in COMPILE_ARGS]
    assert main(["kubeflow", "compile", "--output", str(tmp_path / "x.yaml")] + args) == 2
    assert "spark_master_url" in capfd.readouterr().err


def test_pusher_needs_both_blessings_and_infra_validation_gets_its_settings(spec):
    pusher = spec.root.dag.tasks[p.PUSHER].inputs.artifacts
    producers = {name: a.task_output_artifact.producer_task for name, a in pusher.items()}
    assert producers["model_blessing"] == p.EVALUATOR
    assert producers["infra_blessing"] == p.INFRA_VALIDATOR
    assert pusher["infra_blessing"].task_output_artifact.output_artifact_key == "blessing"
    params = spec.root.dag.tasks[p.INFRA_VALIDATOR].inputs.parameters
    infra = json.loads(params["infra_config"].runtime_value.constant.string_value)
    assert infra["infra_tolerance"] == 1e-5
    assert params["model_name"].runtime_value.constant.string_value == "siamese"


def test_with_a_gallery_the_gallery_model_is_evaluated_validated_and_pushed():
    """--gallery adds GalleryBuilder after the Trainer; Evaluator, InfraValidator and Pusher
    take its model, and it gets the gallery settings and the component resources."""
    from siamese_tfx.kubeflow import cli
    from siamese_tfx.pipeline.cli import build_parser

    args = build_parser().parse_args(
        ["kubeflow", "compile"] + COMPILE_ARGS + ["--gallery", "/mnt/pvc/gallery",
                                                  "--gallery-top-k", "3"])
    spec = runner.compile_spec(cli.config_from_args(args), cli.kubeflow_config_from_args(args))
    tasks = spec["root"]["dag"]["tasks"]
    builder = tasks[p.GALLERY_BUILDER]["inputs"]
    assert builder["artifacts"]["model"]["taskOutputArtifact"]["producerTask"] == p.TRAINER
    gallery = json.loads(builder["parameters"]["gallery_config"]["runtimeValue"]["constant"])
    assert (gallery["gallery_path"], gallery["gallery_top_k"]) == ("/mnt/pvc/gallery", 3)
    for node in (p.EVALUATOR, p.INFRA_VALIDATOR, p.PUSHER):
        model = tasks[node]["inputs"]["artifacts"]["model"]["taskOutputArtifact"]
        assert (model["producerTask"], model["outputArtifactKey"]) == (
            p.GALLERY_BUILDER, "gallery_model"), node
    proto = json_format.ParseDict(spec, pipeline_spec_pb2.PipelineSpec())
    assert _container(proto, p.GALLERY_BUILDER)["resources"]["cpuLimit"] == 3
    for gallery in ("gallery", f"{SHARED}/gallery"):  # relative, or object storage
        config = PipelineConfig(pipeline_root=f"{SHARED}/r", serving_dir=f"{SHARED}/s",
                                data=DataConfig(image_root=f"{SHARED}/images"),
                                gallery=GalleryConfig(gallery_path=gallery))
        with pytest.raises(ValueError, match=f"gallery_path '{gallery}' must be an absolute"):
            runner.check_locations(config)
