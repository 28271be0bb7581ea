"""A compiled KFP container step run inside a LocalDagRunner pipeline, the way KFP runs it.

`KfpContainerExecutor` takes the place of a component's executor. LocalDagRunner resolves the
component's inputs, outputs and exec properties as usual; the executor then does what KFP v2's
driver and launcher do around the compiled container: it builds the step's ExecutorInput
(`inputs.artifacts` with each artifact's URI, metadata and the type schema the compiled
component declares, `inputs.parameterValues` for the compiled parameters,
`outputs.artifacts`, `outputs.outputFile` in the "pod"), puts it in for the `{{$}}`
placeholder of the compiled container's args, runs the compiled command as a process, fails
the component when it exits non-zero (with the end of its log, as KFP's UI shows), and records
the custom properties of the ExecutorOutput the step wrote onto the output artifacts.

Set `STEP` first (`STEP.update(container=..., component=..., env=..., workdir=...)`) from a
compiled spec: `container` is the executor's PipelineContainerSpec as a dict, `component` the
ComponentSpec (its input/output definitions).
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from typing import Any

from google.protobuf import json_format
from tfx.dsl.components.base import base_executor
from tfx.orchestration.kubeflow.v2.container import kubeflow_v2_entrypoint_utils
from tfx.types import artifact as artifact_lib

STEP: dict[str, Any] = {}
RUNS: list[dict[str, Any]] = []  # One per run of the container: exit code, peak RSS, log.
PLACEHOLDER = "{{$}}"  # KFP's PIPELINE_TASK_EXECUTOR_INPUT_PLACEHOLDER.


class PeakMemory(threading.Thread):
    """Follows a process's peak resident memory (VmHWM, kB) until it exits. (getrusage would
    also count the test process's memory the child had before its exec.)"""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak_kb = pid, 0

    def run(self) -> None:
        while True:
            try:
                with open(f"/proc/{self.pid}/status") as f:
                    for line in f:
                        if line.startswith("VmHWM:"):
                            self.peak_kb = max(self.peak_kb, int(line.split()[1]))
                        if line.startswith("State:") and line.split()[1] == "Z":
                            return
            except OSError:
                return
            threading.Event().wait(0.2)


def _runtime_artifacts(artifacts: dict[str, list[artifact_lib.Artifact]],
                       definitions: dict[str, Any], named: bool) -> dict[str, Any]:
    result = {}
    for key, values in artifacts.items():
        if key not in definitions or not values:
            continue
        listed = []
        for value in values:
            names = {value.id: f"metadata://local/artifacts/{value.id}"} if named else {}
            runtime = json_format.MessageToDict(
                kubeflow_v2_entrypoint_utils.to_runtime_artifact(value, names))
            runtime["type"] = definitions[key]["artifactType"]
            listed.append(runtime)
        result[key] = {"artifacts": listed}
    return result


def _parameter_values(exec_properties: dict[str, Any],
                      definitions: dict[str, Any]) -> dict[str, Any]:
    """The compiled parameters, as KFP passes them (strings as compiled, numbers as numbers)."""
    values = {}
    for name in definitions:
        value = exec_properties.get(name)
        if value is None:
            continue
        if hasattr(value, "DESCRIPTOR"):
            value = json_format.MessageToJson(value)
        elif isinstance(value, (dict, list)):
            value = json.dumps(value, sort_keys=True)
        values[name] = value
    return values


def executor_input(input_dict: dict[str, list[artifact_lib.Artifact]],
                   output_dict: dict[str, list[artifact_lib.Artifact]],
                   exec_properties: dict[str, Any], component: dict[str, Any],
                   output_file: str) -> dict[str, Any]:
    """The ExecutorInput KFP's driver gives the step (as JSON)."""
    inputs, outputs = component.get("inputDefinitions", {}), component["outputDefinitions"]
    return {
        "inputs": {
            "artifacts": _runtime_artifacts(input_dict, inputs.get("artifacts", {}), True),
            "parameterValues": _parameter_values(exec_properties, inputs.get("parameters", {})),
        },
        "outputs": {
            "artifacts": _runtime_artifacts(output_dict, outputs["artifacts"], False),
            "outputFile": output_file,
        },
    }


def record_executor_output(path: str,
                           output_dict: dict[str, list[artifact_lib.Artifact]]) -> None:
    """The step's ExecutorOutput metadata as custom properties of its output artifacts (what
    KFP's launcher records in ML Metadata)."""
    with open(path) as f:
        written = json.load(f)
    for key, listed in written.get("artifacts", {}).items():
        for artifact, runtime in zip(output_dict.get(key, []), listed.get("artifacts", [])):
            for name, value in runtime.get("metadata", {}).items():
                if name not in artifact.artifact_type.properties:
                    artifact.set_json_value_custom_property(name, value)


class KfpContainerExecutor(base_executor.BaseExecutor):
    """Runs the compiled container of `STEP` for this component (see the module doc)."""

    # LocalDagRunner calls this in-process with the resolved artifacts.
    def Do(self, input_dict: dict[str, list[artifact_lib.Artifact]],
           output_dict: dict[str, list[artifact_lib.Artifact]],
           exec_properties: dict[str, Any]) -> None:
        container, component = STEP["container"], STEP["component"]
        pod = os.path.join(STEP["workdir"], f"pod-{len(RUNS)}")
        os.makedirs(pod)
        output_file = os.path.join(pod, "kfp_outputs", "output_metadata.json")
        serialized = json.dumps(executor_input(input_dict, output_dict, exec_properties,
                                               component, output_file))
        argv = container["command"] + [serialized if a == PLACEHOLDER else a
                                       for a in container["args"]]
        log_path = os.path.join(pod, "step.log")
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(argv, env=STEP["env"], stdout=log, stderr=subprocess.STDOUT,
                                    cwd=pod)
            memory = PeakMemory(proc.pid)
            memory.start()
            code = proc.wait()
            memory.join()
        with open(log_path) as f:
            text = f.read()
        RUNS.append({"exit_code": code, "max_rss_kb": memory.peak_kb, "log": text,
                     "output_file": output_file})
        if code:
            tail = "\n".join(text.splitlines()[-15:])
            raise RuntimeError(f"the step's container exited with code {code}:\n{tail}")
        if os.path.exists(output_file):
            record_executor_output(output_file, output_dict)
