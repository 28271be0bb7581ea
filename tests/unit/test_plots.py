"""Each chart function writes a PNG of the documented pixel size that shows what it was given:
the series, group and frame colours, and the images themselves."""

import numpy as np
import pytest
from PIL import Image

from siamese_tfx.components.trainer import plots


def _read(path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"), np.int32)


def _pixels_near(pixels: np.ndarray, colour, tolerance: int = 30) -> int:
    return int((np.abs(pixels - np.array(colour)).max(axis=-1) <= tolerance).sum())


def test_line_charts_stack_one_420_pixel_panel_per_entry(tmp_path):
    steps = np.arange(0, 1001, 100)
    panels = [{"title": "loss (train: mean over the last 100 steps)", "xlabel": "step",
               "ylabel": "loss", "series": {"eval": (steps, np.exp(-steps / 400) + 0.2),
                                            "train": (steps, np.exp(-steps / 300))}},
              {"title": "ROC", "xlabel": "false match rate", "ylabel": "true match rate",
               "series": {"model": ([0.0, 0.1, 1.0], [0.0, 0.9, 1.0])},
               "xlim": (0.0, 1.0), "ylim": (0.0, 1.0), "diagonal": True}]
    path = tmp_path / "curves.png"
    plots.line_charts(str(path), panels)
    pixels = _read(path)
    assert pixels.shape == (840, 640, 3)
    top, bottom = pixels[:420], pixels[420:]
    assert _pixels_near(top, plots.COLOURS[0]) > 200  # eval
    assert _pixels_near(top, plots.COLOURS[1]) > 200  # train
    assert _pixels_near(bottom, plots.COLOURS[0]) > 200  # the ROC curve
    assert _pixels_near(bottom, plots.COLOURS[1]) == 0
    assert _pixels_near(bottom, (160, 160, 160), 10) > 200  # the diagonal


def test_line_charts_width_and_a_single_point_series(tmp_path):
    path = tmp_path / "one.png"
    panel = {"series": {"eval": ([5], [0.5]), "gap": ([1, 2], [np.nan, np.nan])}}
    plots.line_charts(str(path), [panel], width=400)
    pixels = _read(path)
    assert pixels.shape == (420, 400, 3)
    assert _pixels_near(pixels, plots.COLOURS[0]) > 20  # the dot (and its legend entry)


def test_line_charts_need_a_panel(tmp_path):
    with pytest.raises(ValueError):
        plots.line_charts(str(tmp_path / "none.png"), [])


def test_histograms_draw_each_group_and_the_marker(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "histogram.png"
    plots.histograms(str(path), {"same identity": rng.normal(0.3, 0.1, 300),
                                 "different": rng.normal(0.9, 0.2, 500)},
                     "distances of same vs different pairs", "distance", marker=0.6)
    pixels = _read(path)
    assert pixels.shape == (420, 640, 3)
    for colour in plots.COLOURS[:3]:  # Two groups, then the threshold marker.
        assert _pixels_near(pixels, colour) > 100
    assert _pixels_near(pixels, plots.COLOURS[3]) == 0


def _frame(pixels: np.ndarray, row: int, column: int, cell: int) -> np.ndarray:
    """The 4-pixel-wide ring around the cell at (`row`, `column`) of an `image_rows` grid."""
    x, y = 10 + column * (cell + 10), 10 + row * (cell + 28)
    ring = pixels[y - 4:y + cell + 4, x - 4:x + cell + 4].copy()
    ring[8:-8, 8:-8] = -1000
    return ring


def test_image_rows_show_the_images_in_green_or_red_frames(tmp_path):
    black = Image.new("L", (20, 20), 0)
    white = Image.new("1", (30, 30), 1)
    rows = [[(black, "query run01", True), (white, "#1 d=0.100", False)],
            [(white, "query run02", True)]]
    path = tmp_path / "grid.png"
    plots.image_rows(str(path), rows, cell=50)
    pixels = _read(path)
    assert pixels.shape == (2 * (50 + 28) + 10, 2 * (50 + 10) + 10, 3)
    assert (pixels[15:55, 15:55] == 0).all()  # The black image fills its cell.
    assert (pixels[15:55, 75:115] == 255).all()  # The white one too.
    green, red = (0, 150, 0), (200, 0, 0)
    for (row, column), (right, wrong) in {(0, 0): (green, red), (0, 1): (red, green),
                                          (1, 0): (green, red)}.items():
        ring = _frame(pixels, row, column, 50)
        assert _pixels_near(ring, right) > 4 * 50, (row, column)
        assert _pixels_near(ring, wrong) == 0, (row, column)
    assert _pixels_near(_frame(pixels, 1, 1, 50), green) == 0  # No image there.
