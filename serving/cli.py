"""The serving commands of `siamese-tfx`: serve, compare, embed, identify, status.

`pipeline/cli.py` calls `register(subparsers)`. TensorFlow and gRPC load inside the command
functions only, so `siamese-tfx --help` stays fast. `python -m siamese_tfx.serving.cli` runs
these commands alone.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from typing import TYPE_CHECKING, Any, Sequence

from siamese_tfx.components.contract import errors, options, signatures
from siamese_tfx.serving.config import ServerConfig

if TYPE_CHECKING:
    from siamese_tfx.serving.client import SiameseClient

DEFAULT_SERVER = "127.0.0.1:8500"
DEFAULT_MODEL_NAME = signatures.DEFAULT_MODEL_NAME  # the name the client asks for by default
_SERVER = "server"  # dest prefix of ServerConfig's options


def register(subparsers: Any) -> None:
    """Adds `serve`, `compare`, `embed`, `identify` and `status` to an argparse subparsers
    object."""
    serve = subparsers.add_parser(
        "serve",
        help="Serve pushed models over TF Serving's gRPC API (local stand-in for TF Serving).",
        description="Serve <model-base>/<model-name>/<version>/ SavedModels over TF Serving's "
        "gRPC API, loading newly pushed versions without a restart. Stops on SIGTERM/SIGINT.",
    )
    options.add_dataclass_options(serve, ServerConfig, _SERVER, "server settings")
    serve.add_argument("--tls-cert", default=None, help="PEM server certificate chain (TLS).")
    serve.add_argument("--tls-key", default=None, help="PEM private key of --tls-cert.")
    serve.add_argument(
        "--tls-client-ca",
        default=None,
        help="PEM CA that must have signed client certificates (enables mutual TLS).",
    )
    serve.add_argument(
        "--log-level",
        default="INFO",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="Log level of the server's log (stderr).",
    )
    serve.set_defaults(func=run_serve)

    compare = subparsers.add_parser(
        "compare", help="Compare two images with the served model.", description="Send two "
        "encoded images (PNG/JPEG/BMP/GIF) to the `compare` signature and print the verdict.",
    )
    compare.add_argument("left", metavar="IMG1", help="First image file.")
    compare.add_argument("right", metavar="IMG2", help="Second image file.")
    _add_client_options(compare)
    compare.set_defaults(func=run_compare)

    embed = subparsers.add_parser(
        "embed", help="Embed images with the served model.", description="Send encoded images "
        "to the `embed` signature and print (or save) their embeddings.",
    )
    embed.add_argument("images", metavar="IMG", nargs="+", help="Image files to embed.")
    embed.add_argument(
        "--output", default=None, help="Also save the embeddings as a .npy array [N, D] here."
    )
    _add_client_options(embed)
    embed.set_defaults(func=run_embed)

    identify = subparsers.add_parser(
        "identify", help="Identify images against a served gallery model.",
        description="Send encoded images to the `identify` signature of a gallery model "
        "(`siamese-tfx gallery build`) and print each one's nearest enrolled identities, and "
        "whether the nearest is within the model's match threshold (else UNKNOWN).",
    )
    identify.add_argument("images", metavar="IMG", nargs="+", help="Image files to identify.")
    identify.add_argument("--top-k", type=int, default=5,
                          help="Identities to show per image, nearest first (at most what the "
                          "gallery model returns) (default: %(default)s).")
    _add_client_options(identify)
    identify.set_defaults(func=run_identify)

    status = subparsers.add_parser(
        "status", help="Show the served model's versions and signatures.", description="Ask "
        "ModelService.GetModelStatus and GetModelMetadata; exits 7 unless a version is AVAILABLE.",
    )
    _add_client_options(status)
    status.set_defaults(func=run_status)


def _add_client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--server",
        default=DEFAULT_SERVER,
        help=f"host:port of the model server (default: {DEFAULT_SERVER}).",
    )
    parser.add_argument("--model-name", default=DEFAULT_MODEL_NAME, help="Served model name.")
    parser.add_argument(
        "--model-version", type=int, default=None, help="Ask for this version (default: newest)."
    )
    parser.add_argument("--timeout", type=float, default=10.0, help="Deadline per call, seconds.")
    parser.add_argument(
        "--retries", type=int, default=3, help="Retries of a call that failed with UNAVAILABLE."
    )
    parser.add_argument("--json", action="store_true", help="Print JSON instead of text.")
    parser.add_argument(
        "--tls-ca", default=None, help="PEM CA of the server's certificate (enables TLS)."
    )
    parser.add_argument("--tls-cert", default=None, help="PEM client certificate (mutual TLS).")
    parser.add_argument("--tls-key", default=None, help="PEM key of --tls-cert.")
    parser.add_argument(
        "--tls-server-name", default=None, help="Name to check the server certificate against."
    )


def _client(args: argparse.Namespace) -> "SiameseClient":
    from siamese_tfx.serving.client import ClientTls, SiameseClient

    use_tls = any((args.tls_ca, args.tls_cert, args.tls_key, args.tls_server_name))
    tls = (
        ClientTls(
            root_certificates_file=args.tls_ca,
            cert_chain_file=args.tls_cert,
            private_key_file=args.tls_key,
            server_name_override=args.tls_server_name,
        )
        if use_tls
        else None
    )
    return SiameseClient(
        args.server,
        args.model_name,
        version=args.model_version,
        timeout=args.timeout,
        retries=args.retries,
        tls=tls,
    )


def _read_images(paths: Sequence[str]) -> list[bytes]:
    images = []
    for path in paths:
        with open(path, "rb") as f:
            images.append(f.read())
    return images


def _fail(message: str, code: int = errors.ExitCode.UNEXPECTED) -> int:
    print(f"error: {message}", file=sys.stderr)
    return int(code)


def _fail_call(args: argparse.Namespace, error: Any) -> int:
    """A failed call (a ServingError): the server and model named, the exit code by whether
    the server answered at all."""
    if error.exit_code == errors.ExitCode.SERVER_UNREACHABLE:
        where = f"no model server answered at {args.server} within {args.timeout:g}s"
    else:
        where = f"the server at {args.server} refused model {args.model_name!r}"
    return _fail(f"{where}: {error}", error.exit_code)


ANNOUNCE = "Serving model"  # how `serve`'s first stdout line starts, once it answers


def start_serve_process(serve_args: Sequence[str], cwd: str | None = None,
                        timeout_s: float = 300.0) -> tuple[Any, str]:
    """`siamese-tfx serve *serve_args` in a process of its own (stdout piped); returns it and
    the address its first line announces, once it answers. RuntimeError (the process killed)
    when it exits or says nothing else first, or is silent for `timeout_s`."""
    import subprocess
    import threading

    process = subprocess.Popen([sys.executable, "-m", "siamese_tfx.serving.cli", "serve",
                                *serve_args], cwd=cwd, stdout=subprocess.PIPE, text=True)
    watchdog = threading.Timer(timeout_s, process.kill)
    watchdog.start()
    line = process.stdout.readline()
    watchdog.cancel()
    if not line.startswith(ANNOUNCE):
        process.kill()
        raise RuntimeError(f"server did not start (exit code {process.wait()})")
    return process, line.rsplit(" on ", 1)[1].strip()


def run_serve(args: argparse.Namespace) -> int:
    """`siamese-tfx serve`: runs the local model server until SIGTERM/SIGINT."""
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from siamese_tfx.serving.batching import read_batching_parameters
    from siamese_tfx.serving.config import TlsConfig
    from siamese_tfx.serving.model_manager import resolve_model_name
    from siamese_tfx.serving.server import serve_until_signalled

    if bool(args.tls_cert) != bool(args.tls_key):
        return _fail("--tls-cert and --tls-key go together", errors.ExitCode.USAGE)
    if args.tls_client_ca and not args.tls_cert:
        return _fail("--tls-client-ca needs --tls-cert and --tls-key", errors.ExitCode.USAGE)
    tls = (
        TlsConfig(args.tls_cert, args.tls_key, args.tls_client_ca) if args.tls_cert else None
    )
    try:
        config = dataclasses.replace(
            options.config_from_args(args, ServerConfig, _SERVER), tls=tls)
        if config.enable_batching:  # a bad file fails here, before anything loads
            read_batching_parameters(config.batching_parameters_file)
        config = dataclasses.replace(
            config, model_name=resolve_model_name(config.model_base, config.model_name))
    except ValueError as e:
        return _fail(str(e), errors.ExitCode.USAGE)

    def announce(handle) -> None:
        versions = handle.manager.served_versions()
        print(
            f"{ANNOUNCE} {config.model_name} versions {versions} on {handle.address}",
            flush=True,
        )

    try:
        return serve_until_signalled(config, announce)
    except OSError as e:
        return _fail(str(e))


def run_compare(args: argparse.Namespace) -> int:
    """`siamese-tfx compare IMG1 IMG2`: prints distance, similarity and match."""
    try:
        left, right = _read_images([args.left, args.right])
    except OSError as e:
        return _fail(str(e), errors.ExitCode.USAGE)
    from siamese_tfx.serving.client import ServingError

    try:
        with _client(args) as client:
            result = client.compare(left, right)
            version = client.last_version
    except ServingError as e:
        return _fail_call(args, e)
    if args.json:
        print(
            json.dumps(
                {
                    "left": args.left,
                    "right": args.right,
                    "distance": result.distance,
                    "similarity": result.similarity,
                    "match": result.match,
                    "model": args.model_name,
                    "version": version,
                }
            )
        )
    else:
        verdict = "MATCH" if result.match else "NO MATCH"
        print(
            f"{verdict}: distance {result.distance:.4f}, similarity {result.similarity:.4f} "
            f"({args.model_name} version {version})"
        )
    return 0


def run_embed(args: argparse.Namespace) -> int:
    """`siamese-tfx embed IMG...`: prints each image's embedding (and saves them with --output)."""
    try:
        images = _read_images(args.images)
    except OSError as e:
        return _fail(str(e), errors.ExitCode.USAGE)
    import numpy as np

    from siamese_tfx.serving.client import ServingError

    try:
        with _client(args) as client:
            embeddings = client.embed(images)
            version = client.last_version
    except ServingError as e:
        return _fail_call(args, e)
    if args.output:
        np.save(args.output, embeddings)
    if args.json:
        print(
            json.dumps(
                {
                    "model": args.model_name,
                    "version": version,
                    "embeddings": [
                        {"image": path, "embedding": [float(v) for v in row]}
                        for path, row in zip(args.images, embeddings)
                    ],
                }
            )
        )
    else:
        print(f"{args.model_name} version {version}: {embeddings.shape[1]}-d embeddings")
        for path, row in zip(args.images, embeddings):
            head = ", ".join(f"{v:+.4f}" for v in row[:6])
            more = ", ..." if len(row) > 6 else ""
            print(f"{path}: norm {np.linalg.norm(row):.4f} [{head}{more}]")
    return 0


def run_identify(args: argparse.Namespace) -> int:
    """`siamese-tfx identify IMG...`: prints each image's nearest identities and verdict."""
    try:
        images = _read_images(args.images)
    except OSError as e:
        return _fail(str(e), errors.ExitCode.USAGE)
    if args.top_k < 1:
        return _fail("--top-k must be at least 1", errors.ExitCode.USAGE)
    from siamese_tfx.serving.client import ServingError

    try:
        with _client(args) as client:
            results = client.identify(images, args.top_k)
            version = client.last_version
    except ServingError as e:
        return _fail_call(args, e)
    if args.json:
        print(json.dumps({
            "model": args.model_name,
            "version": version,
            "results": [
                {"image": path, "known": r.known, "label": r.label,
                 "candidates": [{"label": label, "distance": d, "similarity": s}
                                for label, d, s in zip(r.labels, r.distances, r.similarities)]}
                for path, r in zip(args.images, results)
            ],
        }))
        return 0
    print(f"{args.model_name} version {version}:")
    for path, r in zip(args.images, results):
        verdict = r.label if r.known else "UNKNOWN"
        candidates = ", ".join(f"{label} {d:.4f}" for label, d in zip(r.labels, r.distances))
        print(f"{path}: {verdict} (nearest: {candidates})")
    return 0


def run_status(args: argparse.Namespace) -> int:
    """`siamese-tfx status`: prints version states and signatures; 7 unless one is AVAILABLE."""
    from siamese_tfx.serving.client import ServingError

    try:
        with _client(args) as client:
            versions = client.status()
            try:
                metadata = client.metadata()
            except ServingError as e:
                metadata = None
                metadata_error = str(e)
    except ServingError as e:
        return _fail_call(args, e)
    available = any(v.state == "AVAILABLE" for v in versions)
    if args.json:
        print(
            json.dumps(
                {
                    "model": args.model_name,
                    "versions": [vars(v) for v in versions],
                    "metadata": None
                    if metadata is None
                    else {
                        "version": metadata.version,
                        "signatures": {
                            name: {
                                "inputs": {k: vars(v) for k, v in sig.inputs.items()},
                                "outputs": {k: vars(v) for k, v in sig.outputs.items()},
                            }
                            for name, sig in sorted(metadata.signatures.items())
                            if not name.startswith("__")
                        },
                    },
                }
            )
        )
        return _status_code(available)
    print(f"model {args.model_name} on {args.server}")
    for v in versions:
        error = f" ({v.error_code}: {v.error_message})" if v.error_code != "OK" else ""
        print(f"  version {v.version}: {v.state}{error}")
    if metadata is None:
        print(f"  metadata: {metadata_error}")
    else:
        print(f"  signatures of version {metadata.version}:")
        for name, sig in sorted(metadata.signatures.items()):
            if name.startswith("__"):
                continue
            inputs = ", ".join(f"{k}: {_spec(v)}" for k, v in sorted(sig.inputs.items()))
            outputs = ", ".join(f"{k}: {_spec(v)}" for k, v in sorted(sig.outputs.items()))
            print(f"    {name}({inputs}) -> ({outputs})")
    return _status_code(available)


def _status_code(available: bool) -> int:
    return int(errors.ExitCode.OK if available else errors.ExitCode.NOT_SERVED)


def _spec(spec: Any) -> str:
    if spec.shape is None:
        return f"{spec.dtype}[?]"
    dims = ",".join("None" if d is None else str(d) for d in spec.shape)
    return f"{spec.dtype}[{dims}]"


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the serving commands alone (`python -m siamese_tfx.serving.cli serve ...`)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = argparse.ArgumentParser(
        prog="python -m siamese_tfx.serving.cli", description="Serve and query the Siamese model."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    register(subparsers)
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
