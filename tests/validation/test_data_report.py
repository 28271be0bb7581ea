"""`siamese-tfx data-report` on a run the gate stopped: the HTML page names the anomaly, and it
renders in headless Chromium to a screenshot that is not blank."""

import os
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from siamese_tfx.pipeline import cli, data_report

pytestmark = [pytest.mark.slow]

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run")
STOPPED_BOX = (0xFD, 0xE2, 0xE1)  # The background of the "STOPPED" verdict.


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    message = ("headless Chromium not found (Debian: apt-get install -y chromium); it renders "
               "the data report")
    if os.environ.get("CI"):
        pytest.fail(message + ": CI must install it (.ci/run)")
    pytest.skip(message)


@pytest.fixture(scope="module")
def report(label_two_run, tmp_path_factory) -> str:
    workdir, _, _ = label_two_run
    out = str(tmp_path_factory.mktemp("report") / "report.html")
    assert cli.main(["data-report", os.path.join(workdir, "root"), "--output", out]) == 0
    return out


def test_report_names_the_anomaly_quarantine_and_statistics(report, label_two_run):
    page = open(report, encoding="utf-8").read()
    assert "Data validation STOPPED the run: 1 anomaly(ies)" in page
    assert "Unexpectedly large value: 2" in page
    assert "Split train: 20 examples" in page and "Split eval: 8 examples" in page
    assert "positive fraction" in page
    assert "<script" not in page and "http" not in page  # Self-contained: renders offline.
    # The same run found through its output folder's metadata, by run id.
    workdir = label_two_run[0]
    data = data_report.collect(data_report.find_metadata(workdir), (os.path.join(workdir, "root"),),
                               label_two_run[1].run_id)
    assert data.verdict is not None and data.verdict.blocked


def test_report_renders_in_headless_chromium(report, tmp_path):
    chromium = _chromium()
    screenshot = str(tmp_path / "report.png")
    common = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
              "--window-size=1200,2000"]
    subprocess.run([*common, f"--screenshot={screenshot}", f"file://{report}"], check=True,
                   timeout=120, capture_output=True)
    dom = subprocess.run([*common, "--dump-dom", f"file://{report}"], check=True, timeout=120,
                         capture_output=True, text=True).stdout
    assert "Unexpectedly large value: 2" in dom
    pixels = np.asarray(Image.open(screenshot).convert("RGB"), dtype=np.float64)
    assert pixels.shape[:2] == (2000, 1200)
    colours = len(np.unique(pixels.reshape(-1, 3), axis=0))
    variance = float(pixels.var())
    stopped_box = int(np.all(pixels == STOPPED_BOX, axis=-1).sum())
    print(f"screenshot: variance {variance:.1f}, {colours} colours, "
          f"{stopped_box} pixels of the STOPPED box")
    assert variance > 100 and colours > 20
    assert stopped_box > 5000  # The anomaly verdict is on screen, not only in the HTML.
