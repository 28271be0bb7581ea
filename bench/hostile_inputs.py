"""Hostile requests against the local model server on loopback: what each one costs the server.

Starts `python -m siamese_tfx.serving.cli serve` on 127.0.0.1 over `--model-base` (a fresh
server process per case, so each resident-memory figure is its own) and sends:

- `bomb`: `compare` with a PNG declaring 20000x20000 pixels (a valid IHDR and a zlib stream of
  zeros, about 389 KB), then one declaring 10000x10000 (about 97 KB): the answer, its time and
  the server's resident memory (VmRSS) before and after;
- `expand`: `embed` with a TensorProto whose shape says 20,000 strings but which holds one;
- `cancel`: `compare` on a batch of `--cancel-pairs` pairs of `--cancel-size` px PNGs, first
  with no deadline (what the whole batch costs the server in CPU seconds), then with a 1 s
  deadline: the CPU seconds the server keeps spending after the client gave up, and how long a
  small request sent right then waits for its answer.

    python -m bench.hostile_inputs --model-base runs/serving --model-name siamese [--json]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import struct
import subprocess
import sys
import time
import zlib
from typing import Any, Callable, Sequence

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def bomb_png(width: int, height: int) -> bytes:
    """A valid greyscale PNG of `width` x `height` zero pixels, compressed as far as zlib goes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    compressor = zlib.compressobj(9)
    row = bytes(width + 1)  # filter byte 0, then the row's zero pixels
    rows_per_piece = max(1, (1 << 24) // len(row))
    parts = []
    for start in range(0, height, rows_per_piece):
        parts.append(compressor.compress(row * min(rows_per_piece, height - start)))
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(parts))
            + chunk(b"IEND", b""))


def random_pngs(count: int, size: int, seed: int = 0) -> list[bytes]:
    """`count` random greyscale PNGs of `size` x `size`."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(buffer, "PNG")
        images.append(buffer.getvalue())
    return images


def smooth_pngs(count: int, size: int) -> list[bytes]:
    """`count` different greyscale gradient PNGs of `size` x `size` (a few KB each: large images
    that fit many to a request)."""
    import numpy as np
    from PIL import Image

    ramp = np.arange(size)
    images = []
    for i in range(count):
        pixels = (np.add.outer(ramp * (1 + i % 7), ramp * (1 + i % 5)) + i) % 256
        buffer = io.BytesIO()
        Image.fromarray(pixels.astype(np.uint8)).save(buffer, "PNG")
        images.append(buffer.getvalue())
    return images


def rss_mib(pid: int) -> float:
    """Resident memory of a process (VmRSS), MiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


class Server:
    """The model server in its own process on 127.0.0.1 (a free port)."""

    def __init__(self, model_base: str, model_name: str, extra: Sequence[str] = ()) -> None:
        from siamese_tfx.serving.cli import start_serve_process

        self.process, self.address = start_serve_process(
            ["--model-base", model_base, "--model-name", model_name, "--host", "127.0.0.1",
             "--port", "0", "--log-level", "WARNING", *extra], cwd=REPO_ROOT, timeout_s=180)
        self.pid = self.process.pid

    def wait_idle(self, quiet_s: float = 1.0, timeout_s: float = 300.0) -> float:
        """Waits until the server spends less than 5% of a core over `quiet_s`; returns its CPU
        seconds then."""
        deadline = time.monotonic() + timeout_s
        before = cpu_seconds(self.pid)
        while time.monotonic() < deadline:
            time.sleep(quiet_s)
            now = cpu_seconds(self.pid)
            if now - before < 0.05 * quiet_s:
                return now
            before = now
        return cpu_seconds(self.pid)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _call(server: Server, method: str, request: Any, timeout: float) -> tuple[str, str, float]:
    """(status code name, details, seconds) of one call."""
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    with grpc.insecure_channel(server.address, options=[
            ("grpc.max_send_message_length", 64 << 20),
            ("grpc.max_receive_message_length", 64 << 20)]) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        started = time.monotonic()
        try:
            getattr(stub, method)(request, timeout=timeout)
            code, details = "OK", ""
        except grpc.RpcError as e:
            code, details = e.code().name, e.details() or ""
        return code, details, time.monotonic() - started


def _with_server(args: argparse.Namespace, case: Callable[[Server], dict]) -> dict:
    server = Server(args.model_base, args.model_name)
    try:
        server.wait_idle()
        return case(server)
    finally:
        server.stop()


def bomb_case(args: argparse.Namespace, side: int) -> dict:
    """`compare` with a PNG declaring side x side pixels."""
    from siamese_tfx.serving.requests import compare_request

    bomb = bomb_png(side, side)
    small = random_pngs(1, 32)[0]

    def run(server: Server) -> dict:
        rss_before = rss_mib(server.pid)
        code, details, seconds = _call(server, "Predict",
                                       compare_request(args.model_name, [bomb], [small]), 300)
        rss_answer = rss_mib(server.pid)
        server.wait_idle()
        return {"case": f"bomb {side}x{side}", "request_bytes": len(bomb), "code": code,
                "details": details[:200], "seconds": round(seconds, 3),
                "rss_before_mib": round(rss_before), "rss_at_answer_mib": round(rss_answer),
                "rss_after_mib": round(rss_mib(server.pid))}

    return _with_server(args, run)


def expand_case(args: argparse.Namespace) -> dict:
    """`embed` with a TensorProto declaring 20,000 strings but holding one."""
    from siamese_tfx.serving.requests import bytes_tensor_proto, predict_request

    proto = bytes_tensor_proto(random_pngs(1, 20))
    proto.tensor_shape.dim[0].size = 20_000
    request = predict_request(args.model_name, "embed", {"image": proto})

    def run(server: Server) -> dict:
        cpu_before = cpu_seconds(server.pid)
        code, details, seconds = _call(server, "Predict", request, 300)
        return {"case": "20000-string TensorProto holding 1", "request_bytes":
                request.ByteSize(), "code": code, "details": details[:200],
                "seconds": round(seconds, 3),
                "server_cpu_s": round(server.wait_idle() - cpu_before, 2)}

    return _with_server(args, run)


def cancel_case(args: argparse.Namespace) -> dict:
    """A big `compare` batch: its whole CPU cost, then what it costs after a 1 s deadline."""
    from siamese_tfx.serving.requests import compare_request

    images = smooth_pngs(args.cancel_pairs + 1, args.cancel_size)
    big = compare_request(args.model_name, images[:-1], images[1:])
    small = compare_request(args.model_name, images[:1], images[1:2])

    def run(server: Server) -> dict:
        cpu_start = cpu_seconds(server.pid)
        full_code, _, full_seconds = _call(server, "Predict", big, 600)
        full_cpu = server.wait_idle() - cpu_start
        cpu_start = cpu_seconds(server.pid)
        code, details, seconds = _call(server, "Predict", big, 1.0)
        cpu_at_give_up = cpu_seconds(server.pid)
        next_code, _, next_seconds = _call(server, "Predict", small, 600)
        after = server.wait_idle() - cpu_at_give_up
        return {"case": f"compare {args.cancel_pairs} pairs of {args.cancel_size} px, 1 s "
                "deadline", "full_code": full_code, "full_seconds": round(full_seconds, 2),
                "full_server_cpu_s": round(full_cpu, 2), "code": code,
                "details": details[:200], "seconds": round(seconds, 2),
                "server_cpu_to_deadline_s": round(cpu_at_give_up - cpu_start, 2),
                "server_cpu_after_client_gave_up_s": round(after, 2),
                "next_small_request": next_code, "next_small_request_s": round(next_seconds, 2)}

    return _with_server(args, run)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-base", required=True, help="Folder holding <name>/<version>/.")
    parser.add_argument("--model-name", default="siamese", help="Served model name.")
    parser.add_argument("--cases", default="expand,cancel,bomb",
                        help="Comma-separated cases to run: expand, cancel, bomb.")
    parser.add_argument("--cancel-pairs", type=int, default=1000,
                        help="Pairs in the cancelled request.")
    parser.add_argument("--cancel-size", type=int, default=512,
                        help="Side of its PNGs, pixels.")
    parser.add_argument("--json", action="store_true", help="Print one JSON line per case.")
    args = parser.parse_args(argv)
    runs: list[Callable[[], dict]] = []
    for case in args.cases.split(","):
        if case == "expand":
            runs.append(lambda: expand_case(args))
        elif case == "cancel":
            runs.append(lambda: cancel_case(args))
        elif case == "bomb":
            runs += [lambda: bomb_case(args, 20000), lambda: bomb_case(args, 10000)]
        else:
            parser.error(f"unknown case {case!r}")
    for run in runs:
        report = run()
        if args.json:
            print(json.dumps(report), flush=True)
        else:
            print(", ".join(f"{k} {v}" for k, v in report.items()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
