"""MultiWorkerMirroredStrategy on two local worker processes (TF_CONFIG on 127.0.0.1): they train
together, a worker killed mid-run makes the job restart from the last backup, not from step 0,
and only the chief writes the SavedModel."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from distributed_fixtures import HERE, REPO, free_ports, script_env

STEPS = 24
CHECKPOINT_STEPS = 5
KILL_AFTER_STEP = 12  # Past two backups (steps 5 and 10), before the end.
STEP_SECONDS = 0.1  # Paces the steps so the kill lands mid-run on a fast machine too.
START_TIMEOUT = 240  # Two TensorFlow imports on busy cores, then the first steps.
RUN_TIMEOUT = 300


class Job:
    """Two worker processes of one MultiWorkerMirroredStrategy cluster."""

    def __init__(self, workdir: str, attempt: int):
        ports = free_ports(2)
        self.workdir = workdir
        self.procs: list[subprocess.Popen] = []
        for index in range(2):
            tf_config = {"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                         "task": {"type": "worker", "index": index}}
            log = open(os.path.join(workdir, f"log-{attempt}-worker-{index}.txt"), "w")
            self.procs.append(subprocess.Popen(
                [sys.executable, os.path.join(HERE, "mw_worker.py"), "--workdir", workdir,
                 "--steps", str(STEPS), "--checkpoint-steps", str(CHECKPOINT_STEPS),
                 "--step-seconds", str(STEP_SECONDS)],
                # One thread pool each: two workers share the test machine's cores.
                env=script_env(TF_CONFIG=json.dumps(tf_config), TF_NUM_INTRAOP_THREADS="1",
                               TF_NUM_INTEROP_THREADS="1", OMP_NUM_THREADS="1"),
                cwd=REPO, stdout=log,
                stderr=subprocess.STDOUT))
            log.close()

    def kill(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    def log_tail(self) -> str:
        logs = sorted(f for f in os.listdir(self.workdir) if f.startswith("log-"))
        return "\n".join(f"--- {name}\n" + open(os.path.join(self.workdir, name)).read()[-1500:]
                         for name in logs)


def _events(workdir: str, index: int) -> list[dict]:
    path = os.path.join(workdir, f"progress-worker-{index}.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.endswith("\n")]


def _saved_models(root: str) -> list[str]:
    return sorted(d for d, _, files in os.walk(root) if "saved_model.pb" in files)


@pytest.mark.slow
def test_workers_train_together_resume_after_a_kill_and_only_the_chief_exports(tmp_path):
    workdir = str(tmp_path)
    started = time.monotonic()
    first = Job(workdir, attempt=1)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            done = [e["step"] for e in _events(workdir, 1) if e["event"] == "step"]
            if done and done[-1] >= KILL_AFTER_STEP:
                break
            assert all(p.poll() is None for p in first.procs), first.log_tail()
            assert time.monotonic() < deadline, "workers made no progress\n" + first.log_tail()
            time.sleep(0.1)
        killed_at, kill_time = done[-1], time.monotonic() - started
        first.procs[1].send_signal(signal.SIGKILL)
        # The chief's next collective fails; a cluster manager would now restart the job.
        try:
            chief_code = first.procs[0].wait(timeout=60)
        except subprocess.TimeoutExpired:
            chief_code = None
    finally:
        first.kill()
    assert chief_code != 0, "the chief finished although its peer was killed"
    assert not _saved_models(workdir), "nothing is exported before training ends"

    second = Job(workdir, attempt=2)
    try:
        codes = [p.wait(timeout=RUN_TIMEOUT) for p in second.procs]
    finally:
        second.kill()
    assert codes == [0, 0], second.log_tail()

    report = {}
    for index in range(2):
        events = _events(workdir, index)
        starts = [e for e in events if e["event"] == "start"]
        finish = next(e for e in events if e["event"] == "done")
        assert [s["step"] for s in starts][0] == 0
        resumed = starts[-1]
        # Resumed at the last backup before the kill: a multiple of CHECKPOINT_STEPS, > 0.
        assert 0 < resumed["step"] <= killed_at and resumed["step"] % CHECKPOINT_STEPS == 0
        assert resumed["iterations"] == resumed["step"]
        assert finish["strategy"] == "CollectiveAllReduceStrategy"
        assert finish["replicas"] == 2 and finish["global_batch"] == 8
        assert finish["iterations"] == STEPS
        assert finish["export_dir_left"] is (index == 0)
        report[index] = (resumed["step"], finish)
    assert report[0][0] == report[1][0], "both workers resume from the same backup"
    assert report[0][1]["loss"] == pytest.approx(report[1][1]["loss"])
    assert report[0][1]["chief"] and not report[1][1]["chief"]
    # One SavedModel, the chief's; the other worker's temporary export is gone.
    assert _saved_models(workdir) == [os.path.join(workdir, "serving_model")]
    assert not os.path.exists(report[1][1]["export_dir"])
    # The backup is deleted once training has finished.
    backup = os.path.join(workdir, "run", "backup")
    assert not os.path.exists(backup) or not os.listdir(backup)
    print(f"killed worker 1 after step {killed_at} ({kill_time:.0f}s in), chief exit code "
          f"{chief_code}; resumed at step {report[0][0]} of {STEPS}; "
          f"{time.monotonic() - started:.0f}s in all")
