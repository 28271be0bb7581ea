"""The command line as a user runs it: every expected failure ends with a documented exit code
and a message that names the file, field or value at fault, never a traceback on the terminal
(it goes to the log file; --debug prints it). Most cases run `python -m
siamese_tfx.pipeline.cli` in a subprocess; those that run pipeline components call the same
`main()` in this process (with the terminal's file descriptors captured), which saves a
TensorFlow import per case. Ingestion's hostile files (a FIFO, an oversized file, files outside the class layout, an
image above Pillow's own pixel limit) are quarantined with their reasons, and the limit that is
quoted is the configured one."""

import csv
import dataclasses
import os
import random
import socket
import struct
import subprocess
import sys
import zlib

import pytest
from PIL import Image, ImageDraw

from siamese_tfx.components.contract.errors import EXIT_CODE_HELP, ExitCode

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CLI = [sys.executable, "-m", "siamese_tfx.pipeline.cli"]
CLASSES = 8


def _cli(*args: str, cwd, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], cwd=str(cwd), capture_output=True, text=True,
                          timeout=timeout)


@dataclasses.dataclass
class _Result:
    returncode: int
    stdout: str
    stderr: str


def _main(capfd, *args: str) -> _Result:
    """`siamese-tfx ARGS` in this process: cli.main, the terminal's fds 1 and 2 captured."""
    from siamese_tfx.pipeline import cli

    capfd.readouterr()
    code = cli.main(list(args))
    captured = capfd.readouterr()
    return _Result(code, captured.out, captured.err)


def _drawing(path, seed: int, size: int = 16) -> None:
    rng = random.Random(seed)
    image = Image.new("L", (size, size), color=255)
    draw = ImageDraw.Draw(image)
    for _ in range(3):
        draw.line([(rng.randrange(size), rng.randrange(size)) for _ in range(2)], fill=0,
                  width=2)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image.save(path, format="PNG")


def _png_header_only(width: int, height: int) -> bytes:
    """A ~100-byte PNG whose header declares width x height pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0,
                                                               0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def _classes(root, count: int = CLASSES, images: int = 3) -> str:
    for c in range(count):
        for i in range(images):
            _drawing(os.path.join(root, f"c{c}", f"{i}.png"), seed=10 * c + i)
    return str(root)


def _assert_clean_failure(result, code: ExitCode,
                          *needles: str) -> None:
    assert result.returncode == int(code), (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout, result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert error_lines, result.stderr
    for needle in needles:
        assert needle in result.stderr, (needle, result.stderr)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_help_lists_every_exit_code(tmp_path):
    for args in (["--help"], ["run", "--help"], ["compare", "--help"]):
        result = _cli(*args, cwd=tmp_path, timeout=60)
        assert result.returncode == 0, result.stderr
        text = " ".join(result.stdout.split())
        assert "exit codes:" in text
        for code, meaning in EXIT_CODE_HELP.items():
            assert f"{int(code)} {' '.join(meaning.split())}" in text, (code, text)


def test_hostile_files_in_class_folders_are_quarantined_and_the_limit_stops_the_run(tmp_path):
    root = _classes(tmp_path / "images")
    os.mkfifo(os.path.join(root, "c0", "fifo.png"))  # opening it would block forever
    noise = Image.effect_noise((100, 100), 120).convert("L")
    noise.save(os.path.join(root, "c1", "big.png"), format="PNG")  # ~10 KB, above 4096 bytes
    _drawing(os.path.join(root, "stray.png"), seed=99)  # directly under the root
    _drawing(os.path.join(root, "c2", "sub", "deep.png"), seed=98)  # below a class folder
    # 200,000,000 pixels: above Pillow's own limit (178,956,970), below the configured one.
    with open(os.path.join(root, "c3", "huge.png"), "wb") as f:
        f.write(_png_header_only(20000, 10000))
    # 250,000,000 pixels: above the configured limit, which is the one quoted.
    with open(os.path.join(root, "c4", "huger.png"), "wb") as f:
        f.write(_png_header_only(25000, 10000))

    result = _cli("run", "--image-root", root, "--output-dir", str(tmp_path / "out"),
                  "--num-train-pairs", "20", "--num-eval-pairs", "6",
                  "--max-image-bytes", "4096", "--max-image-pixels", "240000000", cwd=tmp_path)

    _assert_clean_failure(result, ExitCode.BAD_DATA, "more than the limit of 0",
                          "--max-quarantined")
    report = result.stderr.split("Full report: ")[1].split("\n")[0]
    reasons = {row["item"]: row["reason"] for row in csv.DictReader(open(report))}
    assert "not a regular file (a FIFO)" in reasons.pop("c0/fifo.png")
    assert "above the limit of 4096 bytes (--max-image-bytes)" in reasons.pop("c1/big.png")
    assert "outside the class layout" in reasons.pop("stray.png")
    assert "outside the class layout" in reasons.pop(os.path.join("c2", "sub", "deep.png"))
    # Pillow alone would refuse 200,000,000 pixels; the configured 240,000,000 lets it through
    # to decoding (where its missing pixel data shows), and is the limit quoted above it.
    assert "pixels" not in reasons["c3/huge.png"] and "cannot decode" in reasons.pop("c3/huge.png")
    assert "above the limit of 240000000 (--max-image-pixels)" in reasons.pop("c4/huger.png")
    assert not reasons, reasons
    log = result.stderr.split("details and the traceback: ")[1].split(";")[0]
    assert "QuarantineLimitExceeded" in open(log).read()  # the traceback is in the log


def test_bad_options_and_missing_paths_exit_2_before_anything_runs(tmp_path):
    root = _classes(tmp_path / "images", count=4, images=2)
    out = str(tmp_path / "out")
    cases = [
        (["run", "--image-root", str(tmp_path / "nowhere"), "--output-dir", out],
         ["--image-root", "nowhere", "no such folder"]),
        (["run", "--image-root", root, "--manifest", "pairs.csv", "--output-dir", out],
         ["--manifest", "pairs.csv"]),
        (["run", "--image-root", root, "--eval-class-fraction", "2", "--output-dir", out],
         ["eval_class_fraction must be in (0, 1)"]),
        (["evaluate", "--model", str(tmp_path / "no_model"), "--pairs", root],
         ["--model", "no_model", "no such folder"]),
    ]
    for args, needles in cases:
        _assert_clean_failure(_cli(*args, cwd=tmp_path), ExitCode.USAGE, *needles)
    # argparse's own errors: usage and exit code 2, no traceback.
    result = _cli("run", "--num-train-pairs", "many", cwd=tmp_path)
    assert result.returncode == 2 and "invalid int value: 'many'" in result.stderr
    assert "Traceback" not in result.stderr


def test_data_that_cannot_give_the_pairs_asked_for_exits_5_naming_the_option(tmp_path, capfd):
    root = _classes(tmp_path / "images", count=4, images=2)
    # A manifest without its label column.
    with open(os.path.join(root, "pairs.csv"), "w") as f:
        f.write("left,right\nc0/0.png,c0/1.png\n")
    result = _main(capfd, "run", "--image-root", root, "--manifest", "pairs.csv",
                   "--output-dir", str(tmp_path / "m"))
    _assert_clean_failure(result, ExitCode.BAD_DATA, "pairs.csv", "missing ['label']")

    result = _main(capfd, "run", "--image-root", root, "--output-dir", str(tmp_path / "p"),
                   "--num-train-pairs", "1000")
    _assert_clean_failure(result, ExitCode.BAD_DATA, "train split (--num-train-pairs 1000)",
                          "lower the pair count or add images")


def test_anomalies_exit_5_with_the_anomaly_named(tmp_path, capfd):
    root = _classes(tmp_path / "images", count=8, images=3)
    with open(os.path.join(root, "pairs.csv"), "w") as f:  # 10 train pairs, all positive
        f.write("left,right,label,split\n")
        for c in range(5):
            f.write(f"c{c}/0.png,c{c}/1.png,1,train\nc{c}/0.png,c{c}/2.png,1,train\n")
        f.write("c6/0.png,c6/1.png,1,eval\nc6/0.png,c7/1.png,0,eval\n"
                "c7/0.png,c7/1.png,1,eval\nc7/0.png,c6/2.png,0,eval\n")
    result = _main(capfd, "run", "--image-root", root, "--manifest", "pairs.csv",
                   "--output-dir", str(tmp_path / "out"))
    _assert_clean_failure(result, ExitCode.BAD_DATA, "[train] label (class_balance)",
                          "--allow-anomalies")


def test_server_unreachable_exits_6_and_unknown_model_exits_7(tmp_path, capfd):
    from siamese_tfx.serving.config import ServerConfig
    from siamese_tfx.serving.server import start_server

    result = _cli("status", "--server", f"127.0.0.1:{_free_port()}", "--timeout", "2",
                  "--retries", "0", cwd=tmp_path, timeout=60)  # the one subprocess here
    _assert_clean_failure(result, ExitCode.SERVER_UNREACHABLE, "no model server answered at")

    base = tmp_path / "models"
    base.mkdir()
    server = start_server(ServerConfig(model_base=str(base), model_name="pairs", port=0))
    try:
        result = _main(capfd, "status", "--server", server.address, "--model-name", "nope",
                       "--timeout", "5")
    finally:
        server.stop()
    _assert_clean_failure(result, ExitCode.NOT_SERVED, "NOT_FOUND", "'nope'")


def test_evaluate_uses_every_pair_a_small_folder_allows_or_names_the_maximum(tmp_path, capfd):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "serving"))
    import serving_fixtures

    model = str(tmp_path / "model")
    serving_fixtures.build_model(model, seed=0)
    root = _classes(tmp_path / "images", count=4, images=3)  # 12 positive, 54 negative pairs
    result = _main(capfd, "evaluate", "--model", model, "--pairs", root)
    assert result.returncode == 0, result.stderr
    assert "25" in next(line for line in result.stdout.splitlines() if "pairs" in line)

    result = _main(capfd, "evaluate", "--model", model, "--pairs", root, "--num-pairs", "1000")
    _assert_clean_failure(result, ExitCode.BAD_DATA, "--num-pairs 1000", "at most 25")
