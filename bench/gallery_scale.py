"""How identify scales with the gallery: latency in-process and over gRPC, and memory.

For each gallery size (`--sizes`, default 1k, 10k, 100k), a gallery model of the exported model
`--model` with that many random unit embeddings (one exemplar per identity, labels
"id<i>"; components/trainer/gallery.GalleryModel, the class `gallery build` saves) is saved
to a scratch model base, then measured in one run:
1. in-process: the saved model loaded here, `identify` on one image (p50 over `--repeats`) and
   `embed` on the same image (the baseline: identify = embed + the search), and the search's
   share, identify p50 / embed p50;
2. over gRPC: `python -m siamese_tfx.serving.cli serve` on 127.0.0.1 serving it; one client's
   identify and embed p50, and the server's resident memory after loading (and over the first,
   gallery-less size: the gallery's cost in MiB);
3. the SavedModel's size on disk.

    python -m bench.gallery_scale --model runs/demo/serving/digits
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Sequence

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAME = "gallery"


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))


def _p50_ms(call, repeats: int) -> float:
    import numpy as np

    call()  # warm
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return round(float(np.percentile(np.array(times) * 1000, 50)), 2)


def _du_mib(path: str) -> float:
    return round(sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path)
                     for f in files) / 2**20, 1)


def _query_image(model) -> bytes:
    import numpy as np
    import tensorflow as tf

    pixels = np.random.default_rng(0).integers(0, 256, (32, 32, 1), dtype=np.uint8)
    return tf.io.encode_png(pixels).numpy()


def save_gallery_model(model_dir: str, size: int, out_dir: str) -> None:
    """The model plus `size` random unit embeddings, saved as gallery build saves it."""
    import numpy as np
    import tensorflow as tf

    from siamese_tfx.components.contract import signatures
    from siamese_tfx.components.trainer import gallery

    base = gallery.load_model(model_dir)
    width = base.signatures[signatures.EMBED].structured_outputs[signatures.EMBEDDING].shape[-1]
    vectors = np.random.default_rng(size).normal(size=(size, width)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    module = gallery.GalleryModel(base, vectors, np.arange(size, dtype=np.int32),
                                  [f"id{i}" for i in range(size)], 5, temperature=0.1)
    functions = {name: base.signatures[name] for name in signatures.CONTRACT}
    functions[signatures.IDENTIFY] = module.identify.get_concrete_function()
    tf.saved_model.save(module, out_dir, signatures=functions)


def _start_server(model_base: str) -> tuple[subprocess.Popen, str]:
    from siamese_tfx.serving.cli import start_serve_process

    return start_serve_process(["--model-base", model_base, "--model-name", NAME, "--host",
                                "127.0.0.1", "--port", "0", "--log-level", "WARNING"],
                               cwd=REPO_ROOT, timeout_s=300)


def measure(model_dir: str, size: int, repeats: int, scratch: str) -> dict:
    import tensorflow as tf

    from siamese_tfx.components.contract import signatures
    from siamese_tfx.serving.client import SiameseClient

    model_base = os.path.join(scratch, str(size))
    version = os.path.join(model_base, NAME, "1")
    started = time.monotonic()
    save_gallery_model(model_dir, size, version)
    build_s = round(time.monotonic() - started, 1)
    loaded = tf.saved_model.load(version)
    image = tf.constant([_query_image(loaded)])
    identify, embed = (loaded.signatures[n] for n in (signatures.IDENTIFY, signatures.EMBED))
    result = {
        "gallery": size,
        "save_s": build_s,
        "saved_model_mib": _du_mib(version),
        "in_process_identify_p50_ms": _p50_ms(lambda: identify(image=image), repeats),
        "in_process_embed_p50_ms": _p50_ms(lambda: embed(image=image), repeats),
    }
    del loaded, identify, embed
    process, address = _start_server(model_base)
    try:
        with SiameseClient(address, NAME, timeout=60) as client:
            query = [image.numpy()[0]]
            result["grpc_identify_p50_ms"] = _p50_ms(lambda: client.identify(query), repeats)
            result["grpc_embed_p50_ms"] = _p50_ms(lambda: client.embed(query), repeats)
        result["server_rss_mib"] = round(_rss_mib(process.pid), 1)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    shutil.rmtree(model_base, ignore_errors=True)
    result["in_process_identify_over_embed"] = round(
        result["in_process_identify_p50_ms"] / result["in_process_embed_p50_ms"], 2)
    result["grpc_identify_over_embed"] = round(
        result["grpc_identify_p50_ms"] / result["grpc_embed_p50_ms"], 2)
    return result


def run(args: argparse.Namespace) -> dict:
    from siamese_tfx.pipeline.describe import resolve_saved_model

    model_dir = resolve_saved_model(args.model)
    started = time.monotonic()
    load_before = os.getloadavg()
    scratch = tempfile.mkdtemp(prefix="gallery-scale-")
    try:
        rows = [measure(model_dir, size, args.repeats, scratch) for size in args.sizes]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    first = rows[0]["server_rss_mib"]
    for row in rows:
        row["server_rss_over_smallest_mib"] = round(row["server_rss_mib"] - first, 1)
    return {"model": model_dir, "rows": rows, "wall_s": round(time.monotonic() - started, 1),
            "cpus": os.cpu_count(), "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()]}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True,
                        help="Exported SavedModel (euclidean head), or serving/<name>.")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000],
                        help="Gallery sizes (default: %(default)s).")
    parser.add_argument("--repeats", type=int, default=50,
                        help="Calls per p50 (default: %(default)s).")
    parser.add_argument("--output", default="", help="Also write the report as JSON here.")
    args = parser.parse_args(argv)
    report = run(args)
    print(f"model {report['model']}, {report['cpus']} CPUs, load average "
          f"{report['load_average_before']} -> {report['load_average_after']}, "
          f"wall {report['wall_s']} s")
    print("| gallery | in-process identify p50 (x embed) | gRPC identify p50 (x embed) | "
          "server RSS (over smallest) | SavedModel |")
    print("|---|---|---|---|---|")
    for r in report["rows"]:
        print(f"| {r['gallery']:,} | {r['in_process_identify_p50_ms']} ms "
              f"({r['in_process_identify_over_embed']}x) | {r['grpc_identify_p50_ms']} ms "
              f"({r['grpc_identify_over_embed']}x) | {r['server_rss_mib']} MiB "
              f"(+{r['server_rss_over_smallest_mib']}) | {r['saved_model_mib']} MiB |")
    if args.output:
        with open(args.output, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
