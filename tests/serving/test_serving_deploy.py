"""The TF Serving deployment files agree with each other and with the Pusher layout."""

from __future__ import annotations

import os
import re

import yaml
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from siamese_tfx.serving.batching import read_batching_parameters

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEPLOY = os.path.join(REPO_ROOT, "serving", "deploy")


def _read(name: str) -> str:
    with open(os.path.join(DEPLOY, name)) as f:
        return f.read()


def _objects() -> dict[str, dict]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all(_read("kubernetes.yaml"))}


def _model_config():
    return text_format.Parse(_read("models.config"), model_server_config_pb2.ModelServerConfig())


def test_models_config_serves_the_latest_siamese_version():
    (config,) = _model_config().model_config_list.config

    assert config.name == "siamese"
    assert config.base_path.endswith("/siamese")
    assert config.model_platform == "tensorflow"
    assert config.model_version_policy.latest.num_versions == 1


def test_deployment_mounts_the_model_base_and_wires_the_config_files():
    deployment = _objects()["Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    args = dict(a.lstrip("-").split("=", 1) for a in container["args"])
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    (config,) = _model_config().model_config_list.config
    generated = yaml.safe_load(_read("kustomization.yaml"))["configMapGenerator"][0]["files"]

    assert config.base_path.startswith(mounts["models"] + "/")
    for flag in ("model_config_file", "batching_parameters_file", "monitoring_config_file"):
        assert os.path.dirname(args[flag]) == mounts["config"]
        assert os.path.basename(args[flag]) in generated
        assert os.path.exists(os.path.join(DEPLOY, os.path.basename(args[flag])))
    assert (args["port"], args["rest_api_port"]) == ("8500", "8501")
    assert args["enable_model_warmup"] == "true"


def test_readiness_probe_asks_for_the_served_model():
    deployment = _objects()["Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    (config,) = _model_config().model_config_list.config
    probe = container["readinessProbe"]["httpGet"]

    assert probe["path"].startswith(f"/v1/models/{config.name}")
    assert probe["port"] == "http"
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {
        "grpc": 8500,
        "http": 8501,
    }


def test_service_exposes_grpc_and_rest():
    service = _objects()["Service"]
    selector = service["spec"]["selector"]
    labels = _objects()["Deployment"]["spec"]["template"]["metadata"]["labels"]

    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {"grpc": 8500, "http": 8501}
    assert selector.items() <= labels.items()


def test_monitoring_path_matches_the_scrape_annotation():
    annotations = _objects()["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    path = re.search(r'path:\s*"([^"]+)"', _read("monitoring.config")).group(1)

    assert annotations["prometheus.io/path"] == path


def test_batching_parameters_parse_as_tf_servings_proto():
    # The strict parser the local server uses (unknown fields are errors): TF Serving reads the
    # same file with --batching_parameters_file.
    parameters = read_batching_parameters(os.path.join(DEPLOY, "batching_parameters.txt"))

    assert parameters.max_batch_size == 32
    assert parameters.num_batch_threads >= 1
