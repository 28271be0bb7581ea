"""Small PNG charts drawn with Pillow (no plotting library): line charts (training curves, ROC),
overlaid histograms (distances of same vs different pairs) and image grids (one-shot queries)."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189)]
_W, _H, _MARGIN = 640, 420, 60


def _font() -> ImageFont.ImageFont:
    return ImageFont.load_default()


def _ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    return [lo + (hi - lo) * i / (count - 1) for i in range(count)]


class _Axes:
    """A plot area mapping data coordinates to pixels, with a frame, ticks and labels."""

    def __init__(self, draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int],
                 xlim: tuple[float, float], ylim: tuple[float, float], title: str,
                 xlabel: str, ylabel: str):
        self.draw, self.box, self.xlim, self.ylim = draw, box, xlim, ylim
        left, top, right, bottom = box
        font = _font()
        draw.rectangle(box, outline=(0, 0, 0))
        draw.text((left, top - 18), title, fill=(0, 0, 0), font=font)
        draw.text(((left + right) // 2 - 3 * len(xlabel), bottom + 22), xlabel, fill=(0, 0, 0),
                  font=font)
        draw.text((4, top - 18 if not title else top - 4 + (bottom - top) // 2), ylabel[:9],
                  fill=(0, 0, 0), font=font)
        for x in _ticks(*xlim):
            px = self.px(x, ylim[0])[0]
            draw.line([(px, bottom), (px, bottom + 4)], fill=(0, 0, 0))
            draw.text((px - 12, bottom + 6), f"{x:.3g}", fill=(0, 0, 0), font=font)
        for y in _ticks(*ylim):
            py = self.px(xlim[0], y)[1]
            draw.line([(left - 4, py), (left, py)], fill=(0, 0, 0))
            draw.text((left - 44, py - 5), f"{y:.3g}", fill=(0, 0, 0), font=font)

    def px(self, x: float, y: float) -> tuple[float, float]:
        left, top, right, bottom = self.box
        (x0, x1), (y0, y1) = self.xlim, self.ylim
        fx = (x - x0) / (x1 - x0) if x1 > x0 else 0.5
        fy = (y - y0) / (y1 - y0) if y1 > y0 else 0.5
        return left + fx * (right - left), bottom - fy * (bottom - top)


def _limits(values: Sequence[float], pad: float = 0.05) -> tuple[float, float]:
    finite = [v for v in values if np.isfinite(v)]
    if not finite:
        return 0.0, 1.0
    lo, hi = min(finite), max(finite)
    if hi == lo:
        return lo - 0.5, hi + 0.5
    return lo - pad * (hi - lo), hi + pad * (hi - lo)


def _legend(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int],
            names: Sequence[str]) -> None:
    left, top, right, _ = box
    for i, name in enumerate(names):
        y = top + 6 + 14 * i
        draw.line([(right - 130, y + 5), (right - 110, y + 5)], fill=COLOURS[i % len(COLOURS)],
                  width=3)
        draw.text((right - 104, y), name, fill=(0, 0, 0), font=_font())


def line_charts(path: str, panels: Sequence[dict], width: int = _W) -> None:
    """One PNG of line-chart panels stacked vertically. Each panel: {"title", "xlabel",
    "ylabel", "series": {name: (xs, ys)}, optional "xlim", "ylim", "diagonal": bool}."""
    image = Image.new("RGB", (width, _H * len(panels)), "white")
    draw = ImageDraw.Draw(image)
    for p, panel in enumerate(panels):
        series = panel["series"]
        xs_all = [x for xs, _ in series.values() for x in xs]
        ys_all = [y for _, ys in series.values() for y in ys]
        box = (_MARGIN + 10, p * _H + 40, width - 20, (p + 1) * _H - _MARGIN)
        axes = _Axes(draw, box, panel.get("xlim") or _limits(xs_all),
                     panel.get("ylim") or _limits(ys_all), panel.get("title", ""),
                     panel.get("xlabel", ""), panel.get("ylabel", ""))
        if panel.get("diagonal"):
            draw.line([axes.px(0, 0), axes.px(1, 1)], fill=(160, 160, 160))
        for i, (xs, ys) in enumerate(series.values()):
            points = [axes.px(x, y) for x, y in zip(xs, ys) if np.isfinite(y)]
            if len(points) > 1:
                draw.line(points, fill=COLOURS[i % len(COLOURS)], width=2)
            elif points:
                x, y = points[0]
                draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=COLOURS[i % len(COLOURS)])
        _legend(draw, box, list(series))
    image.save(path)


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
    image = Image.new("RGB", (_W, _H), "white")
    draw = ImageDraw.Draw(image)
    box = (_MARGIN + 10, 40, _W - 20, _H - _MARGIN)
    top = max(float(s.max()) for s in shares.values()) if shares else 1.0
    axes = _Axes(draw, box, (lo, hi), (0.0, top * 1.05 or 1.0), title, xlabel, "share")
    for i, (name, share) in enumerate(shares.items()):
        points = []
        for k, value in enumerate(share):
            points += [axes.px(edges[k], value), axes.px(edges[k + 1], value)]
        draw.line(points, fill=COLOURS[i % len(COLOURS)], width=2)
    if marker is not None:
        draw.line([axes.px(marker, 0), axes.px(marker, top * 1.05)],
                  fill=COLOURS[len(shares) % len(COLOURS)], width=1)
    _legend(draw, box, list(shares) + ([f"threshold {marker:.3g}"] if marker is not None
                                       else []))
    image.save(path)


def image_rows(path: str, rows: Sequence[Sequence[tuple[Image.Image, str, bool]]],
               cell: int = 96) -> None:
    """A grid of images with captions; each item is (image, caption, ok): a green frame when ok,
    red otherwise."""
    columns = max(len(r) for r in rows)
    image = Image.new("RGB", (columns * (cell + 10) + 10, len(rows) * (cell + 28) + 10), "white")
    draw = ImageDraw.Draw(image)
    for r, row in enumerate(rows):
        for c, (picture, caption, ok) in enumerate(row):
            x, y = 10 + c * (cell + 10), 10 + r * (cell + 28)
            thumb = picture.convert("RGB").resize((cell, cell))
            image.paste(thumb, (x, y))
            draw.rectangle([x - 2, y - 2, x + cell + 1, y + cell + 1],
                           outline=(0, 150, 0) if ok else (200, 0, 0), width=2)
            draw.text((x, y + cell + 4), caption[:18], fill=(0, 0, 0), font=_font())
    image.save(path)
