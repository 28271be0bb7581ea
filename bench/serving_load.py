"""Load test of the local model server on loopback, against the same model run in-process.

Measures, in one run and on one machine:
1. in-process: the newest SavedModel under `--model-base` loaded in this process, its `compare`
   signature called with one pair (p50 latency) and with batches of `--inprocess-batch` pairs
   (pairs/s): the baseline;
2. for each server setting (`--batching off`, `on` or `both`): `python -m siamese_tfx.serving.cli
   serve` started on 127.0.0.1 (a free port), with `--enable-batching --batching-parameters-file
   FILE` when batching is on; `--clients` client threads sending `compare` requests of `--batch`
   pairs for `--duration` seconds (pairs/s, p50/p99 latency, errors), then one client alone (p50
   latency); then the server is stopped with SIGTERM.

Ratios are printed against the in-process figures of the same run: `pairs_per_s_ratio` (server
pairs/s over in-process batched pairs/s) and `p50_1_client_over_inprocess_ms` (server p50 with one
client minus in-process p50 of one pair).

    python -m bench.serving_load --model-base runs/demo/serving --model-name digits
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Sequence

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEPLOY_BATCHING = os.path.join(REPO_ROOT, "serving", "deploy", "batching_parameters.txt")


def _rss_mib(pid: int) -> float:
    """Resident memory of a process, from /proc (Linux)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _random_pngs(count: int, size: int = 64) -> list[bytes]:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    images = []
    for _ in range(count):
        buffer = io.BytesIO()
        pixels = rng.integers(0, 256, size=(size, size), dtype=np.uint8)
        Image.fromarray(pixels).save(buffer, format="PNG")
        images.append(buffer.getvalue())
    return images


def _newest_version(model_base: str, model_name: str) -> str:
    folder = os.path.join(model_base, model_name)
    versions = [v for v in os.listdir(folder) if v.isdigit()
                and os.path.isfile(os.path.join(folder, v, "saved_model.pb"))]
    if not versions:
        raise SystemExit(f"{folder} holds no SavedModel version")
    return os.path.join(folder, max(versions, key=int))


def _pairs(images: list[bytes], offset: int, count: int) -> list[tuple[bytes, bytes]]:
    n = len(images)
    return [(images[(offset + k) % n], images[(offset + 3 * k + 1) % n]) for k in range(count)]


def _percentile_ms(seconds: list[float], q: float) -> float | None:
    import numpy as np

    return round(float(np.percentile(np.array(seconds) * 1000, q)), 2) if seconds else None


def in_process(args: argparse.Namespace, images: list[bytes]) -> dict:
    """The `compare` signature of the newest version, run in this process."""
    import tensorflow as tf

    compare = tf.saved_model.load(_newest_version(args.model_base, args.model_name)).signatures[
        "compare"]

    def call(pairs: list[tuple[bytes, bytes]]) -> None:
        compare(left_image=tf.constant([a for a, _ in pairs]),
                right_image=tf.constant([b for _, b in pairs]))["distance"].numpy()

    for n in (1, args.inprocess_batch):
        call(_pairs(images, 0, n))  # trace and warm both sizes
    latencies = []
    deadline = time.monotonic() + args.inprocess_duration
    while time.monotonic() < deadline:
        pair = _pairs(images, len(latencies), 1)
        started = time.perf_counter()
        call(pair)
        latencies.append(time.perf_counter() - started)
    done = 0
    started = time.perf_counter()
    deadline = time.monotonic() + args.inprocess_duration
    while time.monotonic() < deadline:
        call(_pairs(images, done, args.inprocess_batch))
        done += args.inprocess_batch
    elapsed = time.perf_counter() - started
    return {
        "p50_1_pair_ms": _percentile_ms(latencies, 50),
        "batch": args.inprocess_batch,
        "pairs_per_s": round(done / elapsed, 1),
    }


def _start_server(args: argparse.Namespace, batching: bool) -> tuple[subprocess.Popen, str]:
    from siamese_tfx.serving.cli import start_serve_process

    serve_args = ["--model-base", args.model_base, "--model-name", args.model_name,
                  "--host", "127.0.0.1", "--port", "0", "--max-workers",
                  str(args.server_workers), "--log-level", "WARNING"]
    if batching:
        serve_args += ["--enable-batching", "--batching-parameters-file",
                       args.batching_parameters_file]
    return start_serve_process(serve_args, cwd=REPO_ROOT, timeout_s=120)


def _load(address: str, args: argparse.Namespace, images: list[bytes], clients: int) -> dict:
    """`clients` threads sending `compare` requests of `args.batch` pairs for args.duration s."""
    from siamese_tfx.serving.client import ServingError, SiameseClient

    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors: list[str] = []
    deadline = time.monotonic() + args.duration

    def client_loop(index: int) -> None:
        with SiameseClient(address, args.model_name, timeout=10, retries=0,
                           max_batch=max(args.batch, 1)) as client:
            for n in range(args.max_requests):
                if time.monotonic() >= deadline:
                    return
                pairs = _pairs(images, index + n, args.batch)
                started = time.perf_counter()
                try:
                    client.compare_many(pairs)
                except ServingError as e:
                    errors.append(e.code.name)
                    continue
                latencies[index].append(time.perf_counter() - started)

    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=args.duration + 60)
    elapsed = time.monotonic() - started
    done = [x for per_client in latencies for x in per_client]
    return {
        "clients": clients,
        "duration_s": round(elapsed, 2),
        "requests": len(done),
        "pairs_per_s": round(len(done) * args.batch / elapsed, 1),
        "p50_ms": _percentile_ms(done, 50),
        "p99_ms": _percentile_ms(done, 99),
        "errors": len(errors),
        "error_codes": sorted(set(errors)),
    }


def serve_and_load(args: argparse.Namespace, images: list[bytes], batching: bool) -> dict:
    """One server setting: `args.clients` clients, then one client alone."""
    from siamese_tfx.serving.client import SiameseClient

    process, address = _start_server(args, batching)
    try:
        with SiameseClient(address, args.model_name, timeout=30) as warm:
            for n in (1, args.batch):
                warm.compare_many(_pairs(images, 0, n))
        rss_start = _rss_mib(process.pid)
        many = _load(address, args, images, args.clients)
        one = _load(address, args, images, 1)
        rss_end = _rss_mib(process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return {
        "batching": batching,
        "many_clients": many,
        "one_client": one,
        "server_rss_start_mib": round(rss_start, 1),
        "server_rss_end_mib": round(rss_end, 1),
    }


def run(args: argparse.Namespace) -> dict:
    """Runs the benchmark and returns its report."""
    images = _random_pngs(8)
    started = time.monotonic()
    load_before = os.getloadavg()
    baseline = in_process(args, images)
    settings = {"off": [False], "on": [True], "both": [False, True]}[args.batching]
    runs = []
    for batching in settings:
        result = serve_and_load(args, images, batching)
        result["pairs_per_s_ratio"] = round(
            result["many_clients"]["pairs_per_s"] / baseline["pairs_per_s"], 3)
        one_p50 = result["one_client"]["p50_ms"]
        result["p50_1_client_over_inprocess_ms"] = (
            round(one_p50 - baseline["p50_1_pair_ms"], 2) if one_p50 is not None else None)
        runs.append(result)
    return {
        "model": _newest_version(args.model_base, args.model_name),
        "batch": args.batch,
        "batching_parameters_file": args.batching_parameters_file,
        "server_workers": args.server_workers,
        "in_process": baseline,
        "servers": runs,
        "wall_s": round(time.monotonic() - started, 1),
        "cpus": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }


def _print(report: dict) -> None:
    base = report["in_process"]
    print(f"model {report['model']}, {report['cpus']} CPUs, load average "
          f"{report['load_average_before']} -> {report['load_average_after']}, "
          f"wall {report['wall_s']} s")
    print(f"in-process: 1 pair p50 {base['p50_1_pair_ms']} ms; batches of {base['batch']}: "
          f"{base['pairs_per_s']} pairs/s")
    for run_ in report["servers"]:
        many, one = run_["many_clients"], run_["one_client"]
        name = "batching on " if run_["batching"] else "batching off"
        print(f"server, {name}: {many['clients']} clients x {report['batch']} pair(s): "
              f"{many['pairs_per_s']} pairs/s ({run_['pairs_per_s_ratio']}x in-process batched), "
              f"p50 {many['p50_ms']} ms, p99 {many['p99_ms']} ms, errors {many['errors']} "
              f"{many['error_codes']}; 1 client: p50 {one['p50_ms']} ms "
              f"(+{run_['p50_1_client_over_inprocess_ms']} ms over in-process); "
              f"RSS {run_['server_rss_start_mib']} -> {run_['server_rss_end_mib']} MiB")


def main(argv: Sequence[str] | None = None) -> int:
    """Parses the options, runs the benchmark and prints its report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-base", required=True, help="Folder holding <name>/<version>/.")
    parser.add_argument("--model-name", default="siamese", help="Served model name.")
    parser.add_argument("--clients", type=int, default=16, help="Concurrent client threads.")
    parser.add_argument("--duration", type=float, default=10.0,
                        help="Seconds of load per phase (many clients, then one).")
    parser.add_argument("--batch", type=int, default=1, help="Pairs per compare request.")
    parser.add_argument(
        "--max-requests", type=int, default=100_000, help="Upper bound of requests per client."
    )
    parser.add_argument("--server-workers", type=int, default=8, help="Server worker threads.")
    parser.add_argument("--batching", choices=("off", "on", "both"), default="both",
                        help="Server settings to measure: without, with server-side batching, "
                        "or both.")
    parser.add_argument("--batching-parameters-file", default=DEPLOY_BATCHING,
                        help="BatchingParameters file of the batching server (default: the one "
                        "serving/deploy/ gives TF Serving).")
    parser.add_argument("--inprocess-batch", type=int, default=32,
                        help="Pairs per call of the in-process batched baseline.")
    parser.add_argument("--inprocess-duration", type=float, default=5.0,
                        help="Seconds of each in-process measurement.")
    parser.add_argument("--json", action="store_true", help="Print the report as JSON only.")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    report = run(args)
    if args.json:
        print(json.dumps(report))
    else:
        _print(report)
    return 1 if any(r["many_clients"]["errors"] or r["one_client"]["errors"]
                    for r in report["servers"]) else 0


if __name__ == "__main__":
    sys.exit(main())
