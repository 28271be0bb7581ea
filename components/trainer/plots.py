"""Small PNG charts drawn with matplotlib's Agg canvas (no pyplot, no display): line charts
(training curves, ROC), overlaid histograms (distances of same vs different pairs) and image
grids (one-shot queries). Each figure is rendered at a fixed pixel size and saved with Pillow
as an RGB image."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from PIL import Image

COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189)]
_W, _H = 640, 420
_DPI = 100
_TITLE_SIZE, _LABEL_SIZE, _SMALL_SIZE = 10.0, 9.0, 8.0
_DIAGONAL = (160, 160, 160)
_OK, _WRONG = (0, 150, 0), (200, 0, 0)


def _rgb(colour: tuple[int, int, int]) -> tuple[float, float, float]:
    """A 0-255 RGB triple as matplotlib's 0-1 floats."""
    return colour[0] / 255.0, colour[1] / 255.0, colour[2] / 255.0


def _colour(index: int) -> tuple[float, float, float]:
    """The `index`-th series colour (cycling through COLOURS)."""
    return _rgb(COLOURS[index % len(COLOURS)])


def _figure(width: int, height: int, constrained: bool = True) -> Figure:
    """A white figure of exactly `width` x `height` pixels."""
    size = (np.nextafter(width / _DPI, np.inf), np.nextafter(height / _DPI, np.inf))
    figure = Figure(figsize=size, dpi=_DPI, facecolor="white",
                    layout="constrained" if constrained else None)
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path: str) -> None:
    """Renders `figure` and writes it with Pillow (the format follows `path`'s extension)."""
    canvas = figure.canvas
    assert isinstance(canvas, FigureCanvasAgg)
    canvas.draw()
    Image.fromarray(np.asarray(canvas.buffer_rgba())).convert("RGB").save(path)


def _wrap(figure: Figure, text: str, width_px: float, size: float) -> str:
    """`text` broken at spaces into lines no wider than `width_px` at font `size` (points)."""
    renderer = figure.canvas.get_renderer()
    font = FontProperties(size=size)
    lines: list[str] = []
    for word in text.split(" "):
        candidate = f"{lines[-1]} {word}" if lines else word
        if lines and renderer.get_text_width_height_descent(candidate, font, False)[0] <= width_px:
            lines[-1] = candidate
        else:
            lines.append(word)
    return "\n".join(lines)


def _limits(values: Sequence[float], pad: float = 0.05) -> tuple[float, float]:
    finite = [v for v in values if np.isfinite(v)]
    if not finite:
        return 0.0, 1.0
    lo, hi = min(finite), max(finite)
    if hi == lo:
        return lo - 0.5, hi + 0.5
    return lo - pad * (hi - lo), hi + pad * (hi - lo)


def _decorate(figure: Figure, axes: Axes, title: str, xlabel: str, ylabel: str,
              legend: Sequence[tuple[Artist, str]]) -> None:
    """Title (wrapped to the figure's width), axis labels, tick label sizes, a light grid and
    a legend of `legend`'s (artist, name) pairs, if any."""
    axes.set_title(_wrap(figure, title, figure.bbox.width - 70, _TITLE_SIZE), fontsize=_TITLE_SIZE,
                   loc="left", parse_math=False)
    axes.set_xlabel(xlabel, fontsize=_LABEL_SIZE, parse_math=False)
    axes.set_ylabel(ylabel, fontsize=_LABEL_SIZE, parse_math=False)
    axes.tick_params(labelsize=_SMALL_SIZE)
    axes.grid(True, color="0.9", linewidth=0.8)
    axes.set_axisbelow(True)
    if legend:
        handles, names = zip(*legend)
        for text in axes.legend(handles, names, fontsize=_SMALL_SIZE, loc="best",
                                framealpha=0.9).get_texts():
            text.set_parse_math(False)


def line_charts(path: str, panels: Sequence[dict], width: int = _W) -> None:
    """One PNG of line-chart panels stacked vertically. Each panel: {"title", "xlabel",
    "ylabel", "series": {name: (xs, ys)}, optional "xlim", "ylim", "diagonal": bool}."""
    if not panels:
        raise ValueError("line_charts needs at least one panel")
    figure = _figure(width, _H * len(panels))
    for axes, panel in zip(figure.subplots(len(panels), 1, squeeze=False)[:, 0], panels):
        series = panel["series"]
        xs_all = [x for xs, _ in series.values() for x in xs]
        ys_all = [y for _, ys in series.values() for y in ys]
        if panel.get("diagonal"):
            axes.plot([0, 1], [0, 1], color=_rgb(_DIAGONAL), linewidth=1)
        legend: list[tuple[Artist, str]] = []
        for i, (name, (xs, ys)) in enumerate(series.items()):
            points = [(x, y) for x, y in zip(xs, ys) if np.isfinite(y)]
            px, py = [p[0] for p in points], [p[1] for p in points]
            line, = axes.plot(px, py, color=_colour(i), linewidth=2,
                              marker="o" if len(points) == 1 else None, markersize=6)
            legend.append((line, str(name)))
        axes.set_xlim(*(panel.get("xlim") or _limits(xs_all)))
        axes.set_ylim(*(panel.get("ylim") or _limits(ys_all)))
        _decorate(figure, axes, panel.get("title", ""), panel.get("xlabel", ""),
                  panel.get("ylabel", ""), legend)
    _save(figure, path)


def histograms(path: str, groups: dict[str, np.ndarray], title: str, xlabel: str,
               bins: int = 40, marker: Optional[float] = None) -> None:
    """Overlaid outline histograms (share of each group per bin), with an optional vertical
    marker (the threshold)."""
    values = np.concatenate([np.asarray(v, dtype=np.float64).reshape(-1) for v in
                             groups.values()])
    lo, hi = float(values.min()), float(values.max())
    if marker is not None:
        lo, hi = min(lo, marker), max(hi, marker)
    hi = hi if hi > lo else lo + 1.0
    edges = np.linspace(lo, hi, bins + 1)
    shares = {name: np.histogram(np.asarray(v).reshape(-1), edges)[0] / max(len(v), 1)
              for name, v in groups.items()}
    top = max(float(s.max()) for s in shares.values()) if shares else 1.0
    figure = _figure(_W, _H)
    axes = figure.add_subplot()
    legend: list[tuple[Artist, str]] = [
        (axes.stairs(share, edges, color=_colour(i), linewidth=2), str(name))
        for i, (name, share) in enumerate(shares.items())]
    if marker is not None:
        legend.append((axes.axvline(marker, color=_colour(len(shares)), linewidth=1),
                       f"threshold {marker:.3g}"))
    axes.set_xlim(lo, hi)
    axes.set_ylim(0.0, top * 1.05 or 1.0)
    _decorate(figure, axes, title, xlabel, "share", legend)
    _save(figure, path)


def image_rows(path: str, rows: Sequence[Sequence[tuple[Image.Image, str, bool]]],
               cell: int = 96) -> None:
    """A grid of images with captions; each item is (image, caption, ok): a green frame when ok,
    red otherwise."""
    columns = max(len(r) for r in rows)
    width, height = columns * (cell + 10) + 10, len(rows) * (cell + 28) + 10
    figure = _figure(width, height, constrained=False)
    for r, row in enumerate(rows):
        for c, (picture, caption, ok) in enumerate(row):
            x, y = 10 + c * (cell + 10), 10 + r * (cell + 28)
            axes = figure.add_axes((x / width, 1 - (y + cell) / height, cell / width,
                                    cell / height))
            axes.imshow(np.asarray(picture.convert("RGB").resize((cell, cell))),
                        interpolation="nearest", aspect="auto")
            axes.set_xticks([])
            axes.set_yticks([])
            for spine in axes.spines.values():
                spine.set_edgecolor(_rgb(_OK if ok else _WRONG))
                spine.set_linewidth(2)
            figure.text(x / width, 1 - (y + cell + 4) / height, caption[:18],
                        fontsize=_SMALL_SIZE, va="top", ha="left", parse_math=False)
    _save(figure, path)
