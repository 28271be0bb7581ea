"""The README's main job as a user runs it (`siamese-tfx demo` in a subprocess, few steps): the
terminal shows the project's own lines only — no line of another library (TensorFlow's C++
start-up errors, Python warnings, TFX/Beam/Keras log lines, deprecation notices) at the default
log level; those go to the run's log file. The Trainer's progress lines are among the project's
own."""

import os
import re
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# What other libraries' lines look like on a terminal.
FOREIGN = [
    re.compile(p) for p in (
        r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] ",  # TensorFlow's C++ logging
        r"^[IWEF]\d{4} \d\d:\d\d:\d\d",  # absl / glog C++ logging
        r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL):[\w.]+:",  # Python logging's basic format
        r"\.py:\d+: \w*(Warning|Error)\b",  # warnings.showwarning
        r"^\s*warnings\.warn\(",
        r"^Instructions for updating:",  # TensorFlow's deprecation notices
        r"\bis deprecated\b",
        r"^Traceback ",
        r"cuFFT|cuDNN|cuBLAS|oneDNN|TF-TRT|TensorRT|CUDA",
        r"^\d+/\d+ \[[=>.]*\]|\d+/\d+ - \d+s - loss",  # Keras progress bars
    )
]


def foreign_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if any(p.search(line) for p in FOREIGN)]


def test_foreign_line_patterns_catch_what_other_libraries_print():
    sample = """\
2026-12-03 11:03:48.082125: E external/local_xla/xla/stream_executor/cuda/cuda_fft.cc:479] Unable to register cuFFT factory
/x/site-packages/google/cloud/aiplatform/models.py:52: FutureWarning: Support for google-cloud-storage < 3.0.0
WARNING:apache_beam.io.tfrecordio:Couldn't find python-snappy
Instructions for updating:
1200/1200 - 201s - loss: 0.0178 - pair_accuracy: 0.9911 - 201s/epoch - 167ms/step
[9/13] Trainer ...
    Ensemble member 1/1: step 100/300, loss 0.1234, 25.0 steps/s, ETA 8s
"""
    assert len(foreign_lines(sample)) == 5


def test_demo_prints_only_its_own_lines(tmp_path):
    out = tmp_path / "demo"
    command = [sys.executable, "-m", "siamese_tfx.pipeline.cli", "demo", "--output-dir",
               str(out), "--num-train-pairs", "200", "--num-eval-pairs", "60",
               "--train-steps", "40", "--batch-size", "16", "--calibration-steps", "2",
               "--progress-seconds", "0.5",
               "--min-accuracy", "0", "--min-auc", "0", "--max-eer", "1", "--pairs", "2"]
    result = subprocess.run(command, cwd=str(tmp_path), capture_output=True, text=True,
                            timeout=900)
    terminal = result.stdout + result.stderr
    assert result.returncode == 0, terminal
    assert "[9/13] Trainer done in" in result.stdout and "pairs judged right" in result.stdout
    assert foreign_lines(terminal) == [], terminal
    progress = [line for line in result.stdout.splitlines() if "step " in line and "ETA" in line]
    assert progress and "/40" in progress[-1], result.stdout  # the Trainer's own progress
    # ... and they went to the run's log file.
    logs = os.listdir(out / "logs")
    log = "".join(open(out / "logs" / name).read() for name in logs)
    assert len(foreign_lines(log)) >= 3, log[:2000]
    assert "Unable to register cuFFT factory" in log or "is deprecated" in log
