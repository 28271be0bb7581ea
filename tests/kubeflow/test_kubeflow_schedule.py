"""`siamese-tfx kubeflow schedule`: the exact KFP API calls, checked with a recording client in
the code path the real `kfp.Client` takes, and against kfp.Client's real signatures."""

import inspect
import json

import kfp
import pytest
from kubeflow_fixtures import COMPILE_ARGS, SHARED

from siamese_tfx.kubeflow import schedule as s

PIPELINE = "siamese-kfp"
RUN_NAME = f"{PIPELINE}-scheduled"


def _request(path, **kwargs):
    return s.ScheduleRequest(package_path=path, pipeline_name=PIPELINE, cron="0 3 * * *",
                             pipeline_root=f"{SHARED}/root", **kwargs)


def _recurring_run_call(version_id, pipeline_id="pipeline:siamese-kfp"):
    return ("create_recurring_run", dict(
        experiment_id="experiment:siamese-tfx", job_name=RUN_NAME, description="",
        cron_expression="0 0 3 * * *", max_concurrency=1, no_catchup=True,
        pipeline_id=pipeline_id, version_id=version_id, enabled=True,
        pipeline_root=f"{SHARED}/root", service_account=None))


def _lookups(pipeline_id, version):
    return [
        ("list_pipeline_versions", dict(pipeline_id=pipeline_id, page_token="", page_size=100,
                                        sort_by="", filter=s.name_filter(version))),
    ]


@pytest.fixture
def spec_file(tmp_path):
    path = tmp_path / "pipeline.yaml"
    path.write_text("pipelineInfo:\n  name: siamese-kfp\n")
    return str(path)


@pytest.mark.parametrize("given, sent", [
    ("0 3 * * *", "0 0 3 * * *"), ("*/15 * * * 1-5", "0 */15 * * * 1-5"),
    ("30 0 3 * * *", "30 0 3 * * *"),
])
def test_cron_becomes_kfp_six_field_form(given, sent):
    assert s.kfp_cron(given) == sent


def test_bad_cron_is_refused():
    with pytest.raises(ValueError, match="5 fields"):
        s.kfp_cron("daily at 3")


def test_first_schedule_uploads_pipeline_version_and_creates_the_recurring_run(spec_file):
    client = s.RecordingClient()
    result = s.schedule(client, _request(spec_file))
    version = s.version_name(PIPELINE, spec_file)
    assert client.calls == [
        ("get_pipeline_id", dict(name=PIPELINE)),
        ("upload_pipeline", dict(pipeline_package_path=spec_file, pipeline_name=PIPELINE,
                                 description="")),
        *_lookups("pipeline:siamese-kfp", version),
        ("upload_pipeline_version", dict(pipeline_package_path=spec_file,
                                         pipeline_version_name=version,
                                         pipeline_id="pipeline:siamese-kfp", description="")),
        ("create_experiment", dict(name="siamese-tfx", namespace=None)),
        ("list_recurring_runs", dict(page_token="", page_size=100, sort_by="",
                                     experiment_id="experiment:siamese-tfx",
                                     filter=s.name_filter(RUN_NAME))),
        _recurring_run_call(f"version:{version}"),
    ]
    assert result.replaced_recurring_run_ids == ()


def test_existing_pipeline_gets_a_new_version_and_the_recurring_run_is_replaced(spec_file):
    client = s.RecordingClient(
        pipelines={PIPELINE: "p-1"}, versions={"p-1": {"siamese-kfp-old": "v-old"}},
        recurring_runs={"experiment:siamese-tfx": {"rr-old": RUN_NAME, "rr-other": "other"}})
    result = s.schedule(client, _request(spec_file))
    version = s.version_name(PIPELINE, spec_file)
    methods = [m for m, _ in client.calls]
    assert "upload_pipeline" not in methods
    assert methods[-3:] == ["list_recurring_runs", "create_recurring_run",
                            "delete_recurring_run"]
    assert ("upload_pipeline_version", dict(
        pipeline_package_path=spec_file, pipeline_version_name=version, pipeline_id="p-1",
        description="")) in client.calls
    assert client.calls[-2] == _recurring_run_call(f"version:{version}", pipeline_id="p-1")
    assert client.calls[-1] == ("delete_recurring_run", dict(recurring_run_id="rr-old"))
    assert result.replaced_recurring_run_ids == ("rr-old",)
    assert set(client.recurring_runs["experiment:siamese-tfx"]) == {
        "rr-other", result.recurring_run_id}


def test_unchanged_spec_uploads_nothing(spec_file):
    client = s.RecordingClient()
    s.schedule(client, _request(spec_file))
    client.calls.clear()
    s.schedule(client, _request(spec_file))
    methods = [m for m, _ in client.calls]
    assert "upload_pipeline" not in methods and "upload_pipeline_version" not in methods
    assert methods.count("create_recurring_run") == 1
    assert methods.count("delete_recurring_run") == 1


def test_recorded_calls_match_the_real_kfp_client_signatures(spec_file):
    """The fake's surface is kfp.Client's: every recorded call binds to the real method."""
    client = s.RecordingClient(pipelines={PIPELINE: "p-1"},
                               recurring_runs={"experiment:siamese-tfx": {"rr": RUN_NAME}})
    s.schedule(client, _request(spec_file))
    for method, kwargs in client.calls:
        inspect.signature(getattr(kfp.Client, method)).bind(None, **kwargs)


@pytest.mark.slow
def test_cli_dry_run_prints_the_calls_without_a_server(compiled_spec_path, capsys):
    from siamese_tfx.pipeline.cli import main

    code = main(["kubeflow", "schedule", "--dry-run", "--cron", "0 3 * * *",
                 "--host", "http://kfp.invalid", "--package", compiled_spec_path,
                 "--experiment", "nightly", "--service-account", "pipeline-runner"]
                + COMPILE_ARGS)
    assert code == 0
    calls = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    version = s.version_name(PIPELINE, compiled_spec_path)
    assert [c["call"] for c in calls] == [
        "get_pipeline_id", "upload_pipeline", "list_pipeline_versions",
        "upload_pipeline_version", "create_experiment", "list_recurring_runs",
        "create_recurring_run"]
    assert calls[1]["kwargs"] == {"pipeline_package_path": compiled_spec_path,
                                  "pipeline_name": PIPELINE, "description": ""}
    assert calls[3]["kwargs"]["pipeline_version_name"] == version
    assert calls[-1]["kwargs"] == {
        "experiment_id": "experiment:nightly", "job_name": RUN_NAME, "description": "",
        "cron_expression": "0 0 3 * * *", "max_concurrency": 1, "no_catchup": True,
        "pipeline_id": "pipeline:siamese-kfp", "version_id": f"version:{version}",
        "enabled": True, "pipeline_root": f"{SHARED}/root",
        "service_account": "pipeline-runner"}


def test_cli_schedule_without_host_or_dry_run_is_refused(capfd):
    from siamese_tfx.pipeline.cli import main

    assert main(["kubeflow", "schedule", "--cron", "0 3 * * *"]) == 2
    assert "--host" in capfd.readouterr().err
