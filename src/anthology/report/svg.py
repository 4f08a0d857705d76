"""The report's charts as inline SVG. Every text and attribute value goes through :func:`element`,
which escapes it, so survey wording and model-written labels can never become markup."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from markupsafe import Markup, escape

#: Ordinal options, first to last (viridis stops).
ORDINAL = ("#440154", "#3b528b", "#21918c", "#5ec962", "#fde725")
#: Correlations from -1 (blue) through 0 (near white) to +1 (red).
DIVERGING = ("#2166ac", "#67a9cf", "#d1e5f0", "#f7f7f7", "#fddbc7", "#ef8a62", "#b2182b")
#: Unordered series (Okabe-Ito, distinguishable with colour-blindness), in turn.
CATEGORICAL = ("#E69F00", "#0072B2", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
FONT = 12
CHAR = 6.6  # approximate width of one character at FONT px


def element(name: str, attrs: Mapping[str, object] | None = None, *children: str) -> Markup:
    """``<name attrs>children</name>``; plain strings are escaped, :class:`Markup` is kept."""
    rendered = "".join(f' {key}="{escape(value)}"' for key, value in (attrs or {}).items())
    return Markup(f"<{name}{rendered}>{''.join(escape(c) for c in children)}</{name}>")


def svg(width: float, height: float, label: str, *children: str) -> Markup:
    attrs = {
        "xmlns": "http://www.w3.org/2000/svg",
        "viewBox": f"0 0 {width:.0f} {height:.0f}",
        "width": f"{width:.0f}",
        "height": f"{height:.0f}",
        "role": "img",
        "aria-label": label,
        "font-size": FONT,
    }
    return element("svg", attrs, element("title", {}, label), *children)


def interpolate(stops: Sequence[str], t: float) -> str:
    """The colour at ``t`` in [0, 1] along evenly spaced hex ``stops``."""
    t = min(max(t, 0.0), 1.0) * (len(stops) - 1)
    i = min(int(t), len(stops) - 2)
    a, b = (np.array([int(s[k : k + 2], 16) for k in (1, 3, 5)]) for s in stops[i : i + 2])
    rgb = a + (b - a) * (t - i)
    return "#" + "".join(f"{round(c):02x}" for c in rgb)


def ordinal_colors(k: int) -> list[str]:
    """``k`` colours for ordered options, first to last."""
    return [interpolate(ORDINAL, i / max(k - 1, 1)) for i in range(k)]


def ink(fill: str) -> str:
    """Black or white text, whichever reads better on ``fill``."""
    r, g, b = (int(fill[k : k + 2], 16) for k in (1, 3, 5))
    return "#111" if 0.299 * r + 0.587 * g + 0.114 * b > 140 else "#fff"


def _text(
    x: float, y: float, text: str, *, anchor: str = "start", size: int = FONT, **attrs: object
) -> Markup:
    position = {"x": f"{x:.1f}", "y": f"{y:.1f}", "text-anchor": anchor, "font-size": size}
    return element("text", {**position, **attrs}, text)


def _rect(x: float, y: float, width: float, height: float, fill: str, tip: str, kind: str = "bar") -> Markup:
    """A filled rectangle with a hover tip; ``kind`` is its class (``bar`` or ``cell``)."""
    box = {"x": f"{x:.1f}", "y": f"{y:.1f}", "width": f"{width:.1f}", "height": f"{height:.1f}"}
    return element("rect", {"class": kind, **box, "fill": fill}, element("title", {}, tip))


def _percent(share: float) -> str:
    return f"{100 * share:.0f}%"


@dataclass(frozen=True)
class StackRow:
    """One row of a stacked bar chart: its label, shares summing to 1 (all NaN: no data), the text
    to its right, and whether it is the reference row."""

    label: str
    shares: Sequence[float]
    note: str = ""
    reference: bool = False


def stacked_bars(rows: Sequence[StackRow], segments: Sequence[str], title: str) -> Markup:
    """Horizontal 100% bars, one per row, one coloured segment per option (:func:`ordinal_colors`)."""
    label_w = max(CHAR * max(len(r.label) for r in rows) + 12, 120)
    note_w, bar_w, row_h, gap = 150, 440, 22, 6
    colors = ordinal_colors(len(segments))
    parts = []
    for i, row in enumerate(rows):
        y = i * (row_h + gap)
        middle = y + row_h / 2 + FONT / 3
        bold = {"font-weight": "bold"} if row.reference else {}
        parts.append(_text(label_w - 8, middle, row.label, anchor="end", **bold))
        parts.append(_text(label_w + bar_w + 8, middle, row.note, fill="#444"))
        if not np.isfinite(row.shares).all():
            parts.append(_text(label_w + 4, middle, "no answers", fill="#888"))
            continue
        x = label_w
        for option, share, color in zip(segments, row.shares, colors, strict=True):
            width = share * bar_w
            parts.append(_rect(x, y, width, row_h, color, f"{row.label}: {option} {100 * share:.1f}%"))
            if width >= 30:
                parts.append(_text(x + width / 2, middle, _percent(share), anchor="middle", fill=ink(color)))
            x += width
    height = len(rows) * (row_h + gap) - gap
    return svg(label_w + bar_w + note_w, height, title, *parts)


def grouped_bars(
    categories: Sequence[str], series: Sequence[tuple[str, Sequence[float], str]], title: str
) -> Markup:
    """Horizontal bars: per category one bar per ``(name, shares, colour)`` series, shares in [0, 1]."""
    label_w = max(CHAR * max(len(c) for c in categories) + 12, 100)
    bar_h, group_gap, plot_w = 10, 10, 300
    top = max((s for _, shares, _ in series for s in shares if np.isfinite(s)), default=1.0) or 1.0
    group_h = len(series) * (bar_h + 1) + group_gap
    parts = []
    for i, category in enumerate(categories):
        y0 = i * group_h
        middle = y0 + len(series) * (bar_h + 1) / 2 + FONT / 3
        parts.append(_text(label_w - 8, middle, category, anchor="end"))
        for j, (name, shares, color) in enumerate(series):
            share = shares[i]
            if not np.isfinite(share) or share == 0:
                continue
            y = y0 + j * (bar_h + 1)
            width = share / top * plot_w
            parts.append(_rect(label_w, y, width, bar_h, color, f"{name}, {category}: {100 * share:.1f}%"))
            parts.append(_text(label_w + width + 4, y + bar_h - 1, _percent(share), size=10, fill="#444"))
    height = len(categories) * group_h - group_gap
    return svg(label_w + plot_w + 50, height, title, *parts)


def heatmap(matrix: np.ndarray, labels: Sequence[str], title: str) -> Markup:
    """A correlation matrix as coloured cells (-1 blue, 0 white, +1 red; grey where undefined)."""
    q = len(labels)
    cell = min(max(300 / q, 10), 28)
    margin = CHAR * max(len(label) for label in labels) * 0.85 + 8
    size = 10 if cell < 18 else FONT
    parts = []
    for i, row_label in enumerate(labels):
        y = margin + i * cell
        parts.append(_text(margin - 4, y + cell / 2 + size / 3, row_label, anchor="end", size=size))
        x = margin + i * cell + cell / 2 + size / 3
        turn = f"rotate(-90 {x:.1f} {margin - 4:.1f})"
        parts.append(_text(x, margin - 4, row_label, size=size, transform=turn))
        for j, col_label in enumerate(labels):
            value = float(matrix[i, j])
            defined = math.isfinite(value)
            fill = interpolate(DIVERGING, (value + 1) / 2) if defined else "#bbbbbb"
            tip = f"{row_label} x {col_label}: " + (f"r = {value:.2f}" if defined else "undefined")
            parts.append(_rect(margin + j * cell, y, cell, cell, fill, tip, "cell"))
            if defined and cell >= 26:
                parts.append(
                    _text(
                        margin + j * cell + cell / 2,
                        y + cell / 2 + 3,
                        f"{value:.1f}",
                        anchor="middle",
                        size=9,
                        fill=ink(fill),
                    )
                )
    extent = margin + q * cell + 2
    return svg(extent, extent, title, *parts)


def color_scale(title: str = "correlation scale") -> Markup:
    """The heatmaps' legend: -1 to +1."""
    steps, width = 21, 12
    points = np.linspace(0, 1, steps)
    parts = [
        _rect(30 + i * width, 0, width, 12, interpolate(DIVERGING, t), f"r = {2 * t - 1:.1f}", "cell")
        for i, t in enumerate(points)
    ]
    parts += [
        _text(24, 10, "-1", anchor="end"),
        _text(30 + steps * width / 2, 26, "0", anchor="middle"),
        _text(36 + steps * width, 10, "+1"),
    ]
    return svg(80 + steps * width, 30, title, *parts)


def _ticks(top: float) -> np.ndarray:
    """Round tick values from 0 to at most ``top``, three to six of them (steps of 1, 2, 2.5 or 5
    times a power of ten)."""
    raw = top / 5
    power = 10 ** math.floor(math.log10(raw))
    step = next(k * power for k in (1, 2, 2.5, 5, 10) if k * power >= raw)
    return np.arange(0, top + 1e-12 * top, step)


@dataclass(frozen=True)
class Level:
    """A horizontal line across a curve chart: its label, height, colour and, where the curve
    reaches that height inside the chart, the size at which it does (marked with a dot)."""

    label: str
    value: float
    color: str
    crossing: float | None = None


def curve_chart(
    sizes: Sequence[float],
    mean: Sequence[float],
    low: Sequence[float],
    high: Sequence[float],
    levels: Sequence[Level],
    title: str,
    *,
    x_label: str,
    y_label: str,
) -> Markup:
    """A decreasing curve over sizes on a log axis, its band shaded, and horizontal ``levels``
    labelled on the right (labels pushed apart where they would overlap)."""
    plot_w, plot_h, left, top, bottom = 460, 240, 52, 10, 40
    label_w = max((CHAR * len(level.label) for level in levels), default=0) + 16
    sizes_a = np.asarray(sizes, dtype=float)
    x_lo, x_hi = math.log(sizes_a[0]), math.log(sizes_a[-1])
    if x_hi - x_lo < 1e-9:
        x_lo, x_hi = x_lo - 0.5, x_hi + 0.5
    finite = [v for v in (*high, *mean, *(level.value for level in levels)) if math.isfinite(v)]
    y_hi = 1.08 * max(finite, default=1.0) or 1.0

    def x(size: float) -> float:
        return left + (math.log(size) - x_lo) / (x_hi - x_lo) * plot_w

    def y(value: float) -> float:
        return top + plot_h * (1 - value / y_hi)

    def points(values: Sequence[float], where: Sequence[float]) -> str:
        return " ".join(
            f"{x(m):.1f},{y(v):.1f}" for m, v in zip(where, values, strict=True) if math.isfinite(v)
        )

    axis = {"stroke": "#888", "stroke-width": 1}
    parts = [
        element("line", {"x1": left, "y1": top + plot_h, "x2": left + plot_w, "y2": top + plot_h, **axis}),
        element("line", {"x1": left, "y1": top, "x2": left, "y2": top + plot_h, **axis}),
    ]
    for tick in _ticks(y_hi):
        parts.append(_text(left - 6, y(tick) + FONT / 3, f"{tick:g}", anchor="end", size=10, fill="#444"))
    last = -math.inf
    for size in sizes_a:
        if x(size) - last >= 34 or size == sizes_a[-1]:
            parts.append(
                _text(x(size), top + plot_h + 14, f"{size:,.0f}", anchor="middle", size=10, fill="#444")
            )
            last = x(size)
    parts.append(_text(left + plot_w / 2, top + plot_h + 32, x_label, anchor="middle", fill="#444"))
    turn = f"rotate(-90 12 {top + plot_h / 2:.1f})"
    parts.append(_text(12, top + plot_h / 2, y_label, anchor="middle", fill="#444", transform=turn))
    band = points(high, sizes_a) + " " + points(low[::-1], sizes_a[::-1])
    parts.append(element("polygon", {"points": band, "fill": "#dddddd", "stroke": "none"}))
    parts.append(
        element(
            "polyline", {"points": points(mean, sizes_a), "fill": "none", "stroke": "#333", "stroke-width": 2}
        )
    )
    for size, value, lo, hi in zip(sizes_a, mean, low, high, strict=True):
        if math.isfinite(value):
            tip = f"{size:,.0f} random respondents: WD {value:.3f} (middle of draws {lo:.3f} to {hi:.3f})"
            parts.append(
                element(
                    "circle",
                    {"cx": f"{x(size):.1f}", "cy": f"{y(value):.1f}", "r": 3, "fill": "#333"},
                    element("title", {}, tip),
                )
            )
    drawn = sorted((level for level in levels if math.isfinite(level.value)), key=lambda level: -level.value)
    label_y = top - math.inf
    for level in drawn:
        height = y(level.value)
        label_y = max(height + FONT / 3, label_y + FONT + 1)
        tip = f"{level.label}: WD {level.value:.3f}"
        line = {"x1": left, "y1": f"{height:.1f}", "x2": left + plot_w, "y2": f"{height:.1f}"}
        style = {"stroke": level.color, "stroke-width": 1.5, "stroke-dasharray": "5 3"}
        parts.append(element("line", {**line, **style}, element("title", {}, tip)))
        parts.append(_text(left + plot_w + 6, label_y, level.label, fill=level.color))
        if level.crossing is not None:
            dot = {"cx": f"{x(level.crossing):.1f}", "cy": f"{height:.1f}", "r": 4, "fill": level.color}
            parts.append(
                element("circle", dot, element("title", {}, f"{tip}, worth {level.crossing:,.0f} humans"))
            )
    height = max(top + plot_h + bottom, label_y + 4)
    return svg(left + plot_w + label_w, height, title, *parts)
