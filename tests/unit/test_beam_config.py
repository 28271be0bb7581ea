"""The Beam settings of local runs and of the Kubeflow compile: one BeamConfig, the same options."""

import pytest

from siamese_tfx.kubeflow import runner as kubeflow_runner
from siamese_tfx.kubeflow.config import KubeflowConfig
from siamese_tfx.pipeline import cli, local_runner
from siamese_tfx.pipeline.config import BeamConfig, LocalBeamConfig


def test_local_default_is_one_in_memory_direct_runner_and_extra_args_come_last():
    assert local_runner.beam_pipeline_args(LocalBeamConfig()) == list(
        local_runner.DEFAULT_BEAM_ARGS)
    beam = LocalBeamConfig(beam_extra_args=("--direct_num_workers=2",))
    assert local_runner.beam_pipeline_args(beam)[-1] == "--direct_num_workers=2"


def test_portable_runner_gets_its_job_service_and_worker_pool():
    beam = LocalBeamConfig(beam_runner="PortableRunner", beam_job_endpoint="localhost:8099",
                           beam_environment_config="localhost:50001",
                           beam_extra_args=("--sdk_worker_parallelism=2",))
    assert local_runner.beam_pipeline_args(beam) == [
        "--runner=PortableRunner", "--job_endpoint=localhost:8099",
        "--environment_type=EXTERNAL", "--environment_config=localhost:50001",
        "--sdk_worker_parallelism=2"]
    loopback = LocalBeamConfig(beam_runner="PortableRunner", beam_job_endpoint="h:1",
                               beam_environment_type="LOOPBACK")
    assert local_runner.beam_pipeline_args(loopback)[-1] == "--environment_type=LOOPBACK"


@pytest.mark.parametrize("settings, message", [
    (dict(beam_runner="PortableRunner"), "beam_job_endpoint"),
    (dict(beam_runner="SamzaRunner"), "beam_runner"),
    (dict(beam_environment_type="SUBPROCESS"), "beam_environment_type"),
])
def test_bad_beam_settings_name_the_field(settings, message):
    with pytest.raises(ValueError, match=message):
        LocalBeamConfig(**settings)


def test_run_and_kubeflow_compile_share_the_beam_options():
    shared = {"beam_environment_type", "beam_environment_config", "beam_extra_args"}
    assert shared == {f for f in BeamConfig.__dataclass_fields__}
    assert issubclass(LocalBeamConfig, BeamConfig) and issubclass(KubeflowConfig, BeamConfig)
    parser = cli.build_parser()
    beam_options = ["--beam-environment-type", "PROCESS", "--beam-environment-config",
                    '{"command": "/opt/boot"}', "--beam-arg=--a=1", "--beam-extra-args=--b=2"]
    run_args = parser.parse_args(["run", *beam_options])
    compile_args = parser.parse_args(["kubeflow", "compile", *beam_options])
    assert [run_args.__dict__[f"beam.{f}"] for f in sorted(shared)] == \
        [compile_args.__dict__[f"kubeflow.{f}"] for f in sorted(shared)]
    kf = KubeflowConfig(image="img:1", flink_master="f:8081", beam_environment_type="PROCESS",
                        beam_environment_config='{"command": "/opt/boot"}',
                        beam_extra_args=["--a=1"])
    assert kubeflow_runner.beam_pipeline_args(kf) == [
        "--runner=FlinkRunner", "--environment_type=PROCESS",
        '--environment_config={"command": "/opt/boot"}', "--flink_master=f:8081", "--a=1"]
