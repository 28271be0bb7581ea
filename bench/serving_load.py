"""Load test of the local model server on loopback: concurrent clients for a fixed time.

Starts `python -m siamese_tfx.serving.cli serve` on 127.0.0.1 (a free port) over `--model-base`, runs
`--clients` client threads sending `compare` requests for `--duration` seconds (each thread also
stops after `--max-requests`), then stops the server with SIGTERM and reports requests/s, p50/p99
latency, errors and the server's resident memory at start and end.

    python -m bench.serving_load --model-base runs/serving --model-name siamese
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


def _start_server(args: argparse.Namespace) -> tuple[subprocess.Popen, str]:
    command = [
        sys.executable, "-m", "siamese_tfx.serving.cli", "serve",
        "--model-base", args.model_base, "--model-name", args.model_name,
        "--host", "127.0.0.1", "--port", "0", "--max-workers", str(args.server_workers),
        "--log-level", "WARNING",
    ]
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    watchdog = threading.Timer(120, process.kill)
    watchdog.start()
    line = process.stdout.readline()
    watchdog.cancel()
    if not line.startswith("Serving model"):
        process.kill()
        raise RuntimeError(f"server did not start (exit code {process.wait()})")
    return process, line.rsplit(" on ", 1)[1].strip()


def run(args: argparse.Namespace) -> dict:
    """Runs the benchmark and returns its report."""
    import numpy as np

    from siamese_tfx.serving.client import ServingError, SiameseClient

    images = _random_pngs(8)
    process, address = _start_server(args)
    try:
        with SiameseClient(address, args.model_name, timeout=30) as warm:
            warm.compare(images[0], images[1])
        rss_start = _rss_mib(process.pid)
        latencies: list[list[float]] = [[] for _ in range(args.clients)]
        errors: list[str] = []
        deadline = time.monotonic() + args.duration

        def client_loop(index: int) -> None:
            with SiameseClient(address, args.model_name, timeout=10, retries=0) as client:
                for n in range(args.max_requests):
                    if time.monotonic() >= deadline:
                        return
                    pairs = [(images[(index + n + k) % 8], images[(index + k) % 8])
                             for k in range(args.batch)]
                    started = time.perf_counter()
                    try:
                        client.compare_many(pairs)
                    except ServingError as e:
                        errors.append(e.code.name)
                        continue
                    latencies[index].append(time.perf_counter() - started)

        threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(args.clients)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=args.duration + 60)
        elapsed = time.monotonic() - started
        rss_end = _rss_mib(process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    done = np.array([x for per_client in latencies for x in per_client]) * 1000
    return {
        "clients": args.clients,
        "batch": args.batch,
        "duration_s": round(elapsed, 2),
        "requests": int(done.size),
        "requests_per_s": round(done.size / elapsed, 1),
        "pairs_per_s": round(done.size * args.batch / elapsed, 1),
        "p50_ms": round(float(np.percentile(done, 50)), 2) if done.size else None,
        "p99_ms": round(float(np.percentile(done, 99)), 2) if done.size else None,
        "errors": len(errors),
        "error_codes": sorted(set(errors)),
        "server_rss_start_mib": round(rss_start, 1),
        "server_rss_end_mib": round(rss_end, 1),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Parses the options, runs the benchmark and prints its report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-base", required=True, help="Folder holding <name>/<version>/.")
    parser.add_argument("--model-name", default="siamese", help="Served model name.")
    parser.add_argument("--clients", type=int, default=16, help="Concurrent client threads.")
    parser.add_argument("--duration", type=float, default=30.0, help="Seconds of load.")
    parser.add_argument("--batch", type=int, default=1, help="Pairs per compare request.")
    parser.add_argument(
        "--max-requests", type=int, default=100_000, help="Upper bound of requests per client."
    )
    parser.add_argument("--server-workers", type=int, default=8, help="Server worker threads.")
    parser.add_argument("--json", action="store_true", help="Print the report as JSON only.")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    report = run(args)
    if args.json:
        print(json.dumps(report))
    else:
        for key, value in report.items():
            print(f"{key:>22}: {value}")
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
