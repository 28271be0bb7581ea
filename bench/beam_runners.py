"""What each Beam runner costs here: the pipeline's ingestion, validation and Transform
(PairExampleGen, StatisticsGen, ExampleValidator, the gate, Transform: a partial run of the real
pipeline up to Transform) on the Omniglot data, once per runner, in one run:

1. DirectRunner in-memory, one worker (the default of `siamese-tfx run`): the baseline;
2. DirectRunner multi_processing, `--workers` worker processes
   (`--beam-arg=--direct_running_mode=multi_processing --beam-arg=--direct_num_workers=2`);
3. the portable runner: Beam's Python job service and an EXTERNAL worker pool, both started here
   as processes on 127.0.0.1 (`--beam-runner PortableRunner`; what Flink and Spark run).

Prints the wall time of each, its ratio to the baseline, the machine's load average before and
after, and checks that every runner wrote the same number of examples per split.

    .venv/bin/python bench/beam_runners.py [--pairs 2000] [--size 32]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.environ.get("SIAMESE_TFX_SHARED_DATA",
                             os.path.join(REPO, "..", "shared", "data"))
OMNIGLOT_ZIPS = [os.path.join(SHARED_DATA, "omniglot", f"images_background_small{i}.zip")
                 for i in (1, 2)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(module_args: list[str], log_path: str, port: int) -> subprocess.Popen:
    """A Beam service process in its own process group, once it listens on `port`."""
    import siamese_tfx.pipeline

    env = dict(os.environ)
    # The pool starts each worker as `python`: this interpreter's; the workers import the
    # project from where this process does.
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
    package_parent = os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(siamese_tfx.pipeline.__file__))))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH")) if p)
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", *module_args], stdout=log,
                                   stderr=subprocess.STDOUT, env=env, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{module_args[0]} exited; see {log_path}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return process
        time.sleep(0.3)
    _stop(process)
    raise RuntimeError(f"{module_args[0]} does not listen on {port}; see {log_path}")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _example_counts(pipeline_root: str) -> dict[str, int]:
    import tensorflow as tf

    counts = {}
    for split in sorted(glob.glob(os.path.join(pipeline_root, "PairExampleGen", "examples", "*",
                                               "Split-*"))):
        files = sorted(glob.glob(os.path.join(split, "*")))
        counts[os.path.basename(split)] = sum(
            1 for _ in tf.data.TFRecordDataset(files, compression_type="GZIP"))
    return counts


def _run_to_transform(config, work: str, beam) -> float:
    """Wall seconds of the pipeline up to Transform on `beam`."""
    from tfx import v1 as tfx
    from tfx.orchestration.pipeline import RunOptions

    from siamese_tfx.pipeline import local_runner
    from siamese_tfx.pipeline import pipeline as pipeline_lib

    pipeline = pipeline_lib.create_pipeline(
        config, local_runner.metadata_config(os.path.join(work, "metadata.sqlite")),
        local_runner.beam_pipeline_args(beam))
    started = time.monotonic()
    tfx.orchestration.LocalDagRunner().run(
        pipeline, run_options=RunOptions(to_nodes=[pipeline_lib.TRANSFORM]))
    return time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=2000,
                        help="Train pairs (eval: a quarter of it; default: %(default)s).")
    parser.add_argument("--size", type=int, default=32,
                        help="Transform's output height and width (default: %(default)s).")
    parser.add_argument("--workers", type=int, default=2,
                        help="DirectRunner multi_processing workers (default: %(default)s).")
    parser.add_argument("--work-dir", default=None, help="Default: a temporary folder.")
    args = parser.parse_args(argv)

    import dataclasses

    from siamese_tfx.components.contract.config import DataConfig, ImageConfig
    from siamese_tfx.pipeline.config import LocalBeamConfig, PipelineConfig
    from siamese_tfx.pipeline.datasets import extract_omniglot

    work = os.path.abspath(args.work_dir or tempfile.mkdtemp(prefix="bench_beam_"))
    images = os.path.join(work, "omniglot")
    if not os.path.isdir(images):
        extract_omniglot(OMNIGLOT_ZIPS, images)
    base = PipelineConfig(
        pipeline_name="bench-beam-runners", model_name="omniglot",
        data=DataConfig(image_root=images, class_depth=2, num_train_pairs=args.pairs,
                        num_eval_pairs=args.pairs // 4, eval_class_fraction=0.1, seed=0),
        image=ImageConfig(height=args.size, width=args.size, channels=1))
    load_before = os.getloadavg()
    wall_started = time.monotonic()
    job_port, pool_port = _free_port(), _free_port()
    job_service = _start(["apache_beam.runners.portability.local_job_service_main", "--port",
                          str(job_port)], os.path.join(work, "job_service.log"), job_port)
    try:
        pool = _start(["apache_beam.runners.worker.worker_pool_main", "--service_port",
                       str(pool_port)], os.path.join(work, "worker_pool.log"), pool_port)
        try:
            runners = {
                "DirectRunner in_memory, 1 worker": LocalBeamConfig(),
                f"DirectRunner multi_processing, {args.workers} workers": LocalBeamConfig(
                    beam_extra_args=("--direct_running_mode=multi_processing",
                                     f"--direct_num_workers={args.workers}")),
                "PortableRunner: job service + EXTERNAL worker pool": LocalBeamConfig(
                    beam_runner="PortableRunner", beam_job_endpoint=f"localhost:{job_port}",
                    beam_environment_type="EXTERNAL",
                    beam_environment_config=f"localhost:{pool_port}"),
            }
            results = []
            for i, (name, beam) in enumerate(runners.items()):
                run_dir = os.path.join(work, f"run{i}")
                config = dataclasses.replace(base, pipeline_root=os.path.join(run_dir, "root"),
                                             serving_dir=os.path.join(run_dir, "serving"))
                seconds = _run_to_transform(config, run_dir, beam)
                results.append({"runner": name, "seconds": round(seconds, 1),
                                "examples": _example_counts(config.pipeline_root)})
                print(f"{name}: {seconds:.1f} s", flush=True)
        finally:
            _stop(pool)
    finally:
        _stop(job_service)
    baseline = results[0]["seconds"]
    for r in results:
        r["ratio_to_in_memory"] = round(r["seconds"] / baseline, 2)
    same = all(r["examples"] == results[0]["examples"] for r in results)
    report = {"pairs": {"train": args.pairs, "eval": args.pairs // 4}, "size": args.size,
              "results": results, "same_example_counts": same,
              "wall_seconds": round(time.monotonic() - wall_started, 1),
              "load_average_before": [round(x, 2) for x in load_before],
              "load_average_after": [round(x, 2) for x in os.getloadavg()],
              "cpus": os.cpu_count()}
    print(json.dumps(report, indent=2))
    print("\n| runner | the pipeline up to Transform | vs in-memory |\n|---|---|---|")
    for r in results:
        print(f"| {r['runner']} | {r['seconds']:.1f} s | {r['ratio_to_in_memory']:.2f} |")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
