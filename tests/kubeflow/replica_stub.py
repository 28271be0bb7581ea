"""A stand-in for the Trainer executor in a TFJob replica, for the launcher's fault tests.

It takes what a replica of the launcher's TFJob gets (the step's args with its ExecutorInput,
TF_CONFIG from the operator) and, by --stub-mode:
- ok: waits until every replica of the cluster has started (as a MultiWorkerMirroredStrategy
  replica waits for the others to join), logs a few lines; the chief writes an ExecutorOutput
  to the ExecutorInput's outputs.outputFile, as TFX's kubeflow_v2_run_executor does;
- worker-fails: worker 0 prints an error and exits 3; the others wait to be stopped;
- wait: waits until the --stub-release file exists, then as ok.
Each start appends {"task", "pid", "tf_config", "output_file"} to <--stub-dir>/starts.jsonl.
"""

import argparse
import json
import os
import sys
import time


def _wait_for_cluster(starts: str, tf_config: dict, timeout_s: float = 120.0) -> None:
    """Returns once every task of TF_CONFIG's cluster has logged its start (the chief would
    otherwise finish, and the job succeed, before a slow worker's process has started)."""
    expected = {f"{kind}-{i}" for kind, hosts in tf_config["cluster"].items()
                for i in range(len(hosts))}
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        with open(starts) as f:
            if expected <= {json.loads(line)["task"] for line in f if line.strip()}:
                return
        time.sleep(0.1)
    raise SystemExit(f"not every replica of {sorted(expected)} started in {timeout_s:.0f} s")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json_serialized_invocation_args", required=True)
    parser.add_argument("--stub-mode", required=True, choices=("ok", "worker-fails", "wait"))
    parser.add_argument("--stub-dir", required=True)
    parser.add_argument("--stub-release", default="")
    args, _ = parser.parse_known_args()
    executor_input = json.loads(args.json_serialized_invocation_args)
    tf_config = json.loads(os.environ["TF_CONFIG"])
    task = f"{tf_config['task']['type']}-{tf_config['task']['index']}"
    output_file = executor_input["outputs"]["outputFile"]
    with open(os.path.join(args.stub_dir, "starts.jsonl"), "a") as f:
        f.write(json.dumps({"task": task, "pid": os.getpid(), "tf_config": tf_config,
                            "output_file": output_file}) + "\n")
    print(f"{task}: started in a cluster of {sum(map(len, tf_config['cluster'].values()))}",
          flush=True)
    if args.stub_mode == "worker-fails":
        if task == "worker-0":
            print(f"{task}: RuntimeError: CUDA error: out of memory", file=sys.stderr, flush=True)
            return 3
        time.sleep(600)
    if args.stub_mode == "wait":
        while not os.path.exists(args.stub_release):
            time.sleep(0.1)
    _wait_for_cluster(os.path.join(args.stub_dir, "starts.jsonl"), tf_config)
    for step in range(3):
        print(f"{task}: step {step + 1}/3", flush=True)
    if tf_config["task"]["type"] == "chief":
        os.makedirs(os.path.dirname(output_file), exist_ok=True)
        uri = executor_input["outputs"]["artifacts"]["model"]["artifacts"][0]["uri"]
        with open(output_file, "w") as f:
            json.dump({"artifacts": {"model": {"artifacts": [
                {"uri": uri, "metadata": {"written_by": task}}]}}}, f)
    print(f"{task}: done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
