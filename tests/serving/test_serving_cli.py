"""`siamese-tfx serve|compare|embed|status`, through `siamese_tfx.serving.cli.register`."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from serving_fixtures import needs_local_server

from siamese_tfx.serving import cli

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="siamese-tfx")
    subparsers = parser.add_subparsers(dest="command", required=True)
    cli.register(subparsers)
    return parser


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def test_registers_four_commands_each_with_help_on_every_option():
    commands = _subparsers(_parser())

    assert set(commands) == {"serve", "compare", "embed", "identify", "status"}
    for name, parser in commands.items():
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"
        assert callable(parser.get_default("func")), name


def test_importing_the_cli_loads_neither_tensorflow_nor_grpc():
    code = "import sys, siamese_tfx.serving.cli; print(sorted({'tensorflow', 'grpc'} & set(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def _client_args(target) -> list[str]:
    return ["--server", target.address, "--model-name", target.model_name, "--timeout", "30"]


@pytest.fixture
def image_files(tmp_path, images):
    paths = []
    for i, data in enumerate(images[:3]):
        path = tmp_path / f"image{i}"
        path.write_bytes(data)
        paths.append(str(path))
    return paths


def test_compare_prints_json(target, client, image_files, images, capsys):
    args = _parser().parse_args(["compare", *image_files[:2], *_client_args(target), "--json"])

    assert args.func(args) == 0

    printed = json.loads(capsys.readouterr().out)
    expected = client.compare(images[0], images[1])
    assert printed["distance"] == pytest.approx(expected.distance, abs=1e-5)
    assert printed["match"] == expected.match
    assert printed["version"] == client.last_version


def test_compare_prints_a_readable_verdict(target, image_files, capsys):
    args = _parser().parse_args(["compare", image_files[0], image_files[0], *_client_args(target)])

    assert args.func(args) == 0

    out = capsys.readouterr().out
    assert out.startswith("MATCH: distance 0.0000") and "version" in out


def test_embed_prints_and_saves_embeddings(target, client, image_files, images, tmp_path, capsys):
    output = str(tmp_path / "embeddings.npy")
    args = _parser().parse_args(
        ["embed", *image_files, *_client_args(target), "--json", "--output", output]
    )

    assert args.func(args) == 0

    printed = json.loads(capsys.readouterr().out)
    expected = client.embed(images[:3])
    assert [e["image"] for e in printed["embeddings"]] == image_files
    np.testing.assert_allclose([e["embedding"] for e in printed["embeddings"]], expected, atol=1e-5)
    np.testing.assert_allclose(np.load(output), expected, atol=1e-6)


def test_status_lists_versions_and_signatures(target, capsys):
    args = _parser().parse_args(["status", *_client_args(target)])

    assert args.func(args) == 0

    out = capsys.readouterr().out
    assert ": AVAILABLE" in out
    assert "compare(left_image: string[None], right_image: string[None])" in out
    assert "embed(image: string[None])" in out


def test_client_errors_exit_non_zero_with_the_code(target, image_files, capsys):
    args = _parser().parse_args(
        ["status", "--server", target.address, "--model-name", "no_such_model"]
    )

    assert args.func(args) == 7  # NOT_SERVED: the server answered, without that model
    err = capsys.readouterr().err
    assert "NOT_FOUND" in err and "'no_such_model'" in err and target.address in err


def test_missing_image_file_exits_2(target, tmp_path, capsys):
    missing = str(tmp_path / "missing.png")
    args = _parser().parse_args(["compare", missing, missing, *_client_args(target)])

    assert args.func(args) == 2
    assert "missing.png" in capsys.readouterr().err


@pytest.mark.slow
def test_serve_runs_until_sigterm(models, images):
    """Without --model-name, `serve` serves the one model under --model-base."""
    needs_local_server()
    command = [
        sys.executable, "-m", "siamese_tfx.serving.cli", "serve", "--model-base", models.model_base,
        "--port", "0", "--poll-interval", "0.5",
    ]
    process = subprocess.Popen(
        command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    watchdog = threading.Timer(120, process.kill)
    watchdog.start()
    try:
        line = process.stdout.readline()
        assert line.startswith(f"Serving model {models.model_name} versions [1, 2] on") or (
            line.startswith(f"Serving model {models.model_name} versions [2] on")), (
            process.stderr.read() if not line else line)
        address = line.rsplit(" on ", 1)[1].strip()
        from siamese_tfx.serving.client import SiameseClient

        with SiameseClient(address, models.model_name, timeout=30) as client:
            assert client.compare(images[0], images[0]).match
        process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        assert process.wait(timeout=30) == 0
        assert time.monotonic() - started < 15
        assert "Received SIGTERM, stopping" in process.stderr.read()
    finally:
        watchdog.cancel()
        if process.poll() is None:
            process.kill()
            process.wait()


def test_serve_without_model_name_refuses_to_guess_among_several(models, tmp_path):
    needs_local_server()
    base = tmp_path / "models"
    for name in ("faces", "glyphs"):
        os.makedirs(base / name)
        os.symlink(models.newest, base / name / "1")
    (base / "notes").mkdir()  # no version folder: not a model
    command = [sys.executable, "-m", "siamese_tfx.pipeline.cli", "serve", "--model-base",
               str(base), "--port", "0"]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "holds 2 models (faces, glyphs): choose one with --model-name" in result.stderr
    assert "Traceback" not in result.stderr
