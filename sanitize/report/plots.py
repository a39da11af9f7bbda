"""Small inline-SVG charts for ``report.html``: no plotting library, no network, no script.

Each function returns one ``<svg>`` element as a string, sized by its ``viewBox`` so it
shrinks with the page, never wider than that box: a chart's text sizes are chosen for the
narrowest place the page gives the chart, so labels render at 11 px or more. Inputs are
already-reduced figures (bin counts, a bounded sample of points), so every chart stays a
few kilobytes whatever the size of the dataset.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

import numpy as np

KEPT_COLOUR = "#7f9cc7"
REMOVED_COLOUR = "#d1493f"
THRESHOLD_COLOUR = "#222"
AXIS_COLOUR = "#9aa0a6"
TEXT_COLOUR = "#4a4f55"
TEXT_SIZE = 12  # font size of chart text, SVG units (px when the chart is drawn at full width)
CHAR_WIDTH = 0.6  # width of a character in units of the font size (digits, lower case)


@dataclass(frozen=True)
class Frame:
    """Plot area of a chart: total size and margins, in SVG user units (about pixels)."""

    width: float = 440
    height: float = 210
    left: float = 46
    right: float = 14
    top: float = 14
    bottom: float = 34

    @property
    def inner_width(self) -> float:
        return self.width - self.left - self.right

    @property
    def inner_height(self) -> float:
        return self.height - self.top - self.bottom


def _svg(frame: Frame, body: list[str], label: str) -> str:
    return (
        f'<svg class="chart" viewBox="0 0 {frame.width:g} {frame.height:g}" role="img" '
        f'style="max-width:{frame.width:g}px" '
        f'aria-label="{escape(label)}" xmlns="http://www.w3.org/2000/svg">'
        + "".join(body)
        + "</svg>"
    )


def _text(
    x: float, y: float, text: str, *, anchor: str = "middle", size: float = TEXT_SIZE, **attrs
) -> str:
    extra = "".join(f' {k.replace("_", "-")}="{v}"' for k, v in attrs.items())
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{size}" '
        f'fill="{TEXT_COLOUR}"{extra}>{escape(text)}</text>'
    )


def _log_ticks(top: float) -> list[int]:
    """Counts 1, 10, 100, ... up to ``top``."""
    return [10**k for k in range(int(math.log10(max(top, 1))) + 1)]


def score_histogram(
    kept: np.ndarray,
    removed: np.ndarray,
    *,
    threshold: float = 0.5,
    bins: int = 40,
    label: str = "score histogram",
    upper: float = 1.0,
    axis_title: str = "score",
    threshold_text: str = "flag \u2265 {threshold:g}",
    width: float = 340,
    text_size: float = 13,
) -> str:
    """Stacked histogram of scores in [0, upper], kept rows under removed rows, log-count axis.

    Parameters
    ----------
    kept, removed : ndarray of shape (n,)
        Scores of the rows the decision kept and removed (NaN entries are ignored).
    threshold : float, default=0.5
        Drawn as a dashed vertical line; a detector flags exactly the rows at or above it.
    bins : int, default=40
        Equal-width bins over [0, upper]; values above ``upper`` fall in the last.
    upper : float, default=1.0
        Right end of the value axis (1 for scores; the largest weight for sample weights).
    axis_title, threshold_text : str
        Title under the value axis; text by the dashed line (``{threshold}``: its value).
    width : float, default=340
        Width of the chart in SVG units; why 340: ``docs/defaults.md``.
    text_size : float, default=13
        Font size of the tick labels and titles, SVG units.

    Notes
    -----
    The count axis is log(1 + count): poisons are a few percent of a class, and on a linear
    axis their bars vanish next to the clean mass near 0.
    """
    frame = Frame(
        width=width,
        height=round(width * 0.55),
        left=14 + text_size * CHAR_WIDTH * 6,  # room for "10,000"
        top=text_size + 8,
        bottom=2 * text_size + 14,
    )
    edges = np.linspace(0.0, upper, bins + 1)
    kept_counts, _ = np.histogram(np.minimum(kept[np.isfinite(kept)], upper), bins=edges)
    removed_counts, _ = np.histogram(np.minimum(removed[np.isfinite(removed)], upper), bins=edges)
    total = kept_counts + removed_counts
    top = math.log10(1 + max(int(total.max(initial=0)), 1))

    def y_of(count: float) -> float:
        return frame.top + frame.inner_height * (1 - math.log10(1 + count) / top)

    def x_of(value: float) -> float:
        return frame.left + frame.inner_width * value / upper

    body = _count_gridlines(frame, _log_ticks(10**top - 1), y_of, text_size)
    body += _stacked_bars(frame, edges, kept_counts, removed_counts, x_of, y_of)
    body.append(_axes(frame))
    tick_y = frame.height - frame.bottom + text_size + 3
    for value in np.linspace(0.0, upper, 5):
        body.append(_text(x_of(value), tick_y, f"{value:g}", size=text_size))
    middle = frame.left + frame.inner_width / 2
    body.append(_text(middle, frame.height - 5, axis_title, size=text_size))
    text = threshold_text.format(threshold=threshold)
    body += _threshold_marker(frame, x_of(threshold), text, text_size)
    return _svg(frame, body, label)


def _count_gridlines(
    frame: Frame, ticks: list[int], y_of: Callable[[float], float], text_size: float
) -> list[str]:
    """A horizontal grid line and its count label at each of ``ticks``."""
    body = []
    for tick in ticks:
        y = y_of(tick)
        body.append(
            f'<line x1="{frame.left}" x2="{frame.width - frame.right}" y1="{y:.1f}" '
            f'y2="{y:.1f}" stroke="#eceef1"/>'
        )
        body.append(
            _text(frame.left - 5, y + text_size / 3, f"{tick:,}", anchor="end", size=text_size)
        )
    return body


def _stacked_bars(
    frame: Frame,
    edges: np.ndarray,
    kept_counts: np.ndarray,
    removed_counts: np.ndarray,
    x_of: Callable[[float], float],
    y_of: Callable[[float], float],
) -> list[str]:
    """One bar a bin: its kept rows, and its removed rows stacked on top."""
    body = []
    bins = len(edges) - 1
    bar_width = frame.inner_width / bins
    for i in range(bins):
        x = x_of(edges[i]) + 0.5
        base = frame.top + frame.inner_height
        for count, below, colour, name in (
            (kept_counts[i], 0, KEPT_COLOUR, "kept"),
            (removed_counts[i], kept_counts[i], REMOVED_COLOUR, "removed"),
        ):
            if count == 0:
                continue
            y_top, y_bottom = y_of(below + count), (y_of(below) if below else base)
            body.append(
                f'<rect x="{x:.1f}" y="{y_top:.1f}" width="{bar_width - 1:.1f}" '
                f'height="{max(y_bottom - y_top, 0.5):.1f}" fill="{colour}">'
                f"<title>{edges[i]:.3f}-{edges[i + 1]:.3f}: {count:,} {name}</title></rect>"
            )
    return body


def _threshold_marker(frame: Frame, x: float, text: str, text_size: float) -> list[str]:
    """The dashed vertical line at the threshold, and its text beside the line's top."""
    return [
        f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{frame.top - 4}" '
        f'y2="{frame.top + frame.inner_height}" stroke="{THRESHOLD_COLOUR}" '
        f'stroke-width="1.4" stroke-dasharray="4 3"/>',
        _text(x + 5, frame.top - 6, text, anchor="start", size=text_size),
    ]


def _axes(frame: Frame) -> str:
    x0, y0 = frame.left, frame.top + frame.inner_height
    return (
        f'<path d="M{x0},{frame.top} V{y0:.1f} H{frame.width - frame.right}" '
        f'fill="none" stroke="{AXIS_COLOUR}"/>'
    )


@dataclass(frozen=True)
class Bar:
    """One row of a horizontal bar chart."""

    label: str
    value: float
    text: str
    highlight: bool = False


def bar_chart(
    bars: Sequence[Bar],
    *,
    scale_max: float,
    width: float = 600,
    label_chars: int = 22,
    label: str = "bar chart",
) -> str:
    """Horizontal bars, one row each, value on a shared axis from 0 to ``scale_max``.

    ``highlight`` bars are drawn in the removal colour, the others in the kept colour; the
    ``text`` of each bar is written right of it; labels longer than ``label_chars`` are cut.
    """
    char = TEXT_SIZE * CHAR_WIDTH
    longest_text = max((len(bar.text) for bar in bars), default=0)
    row, label_width, text_width = 24, 14 + char * label_chars, 16 + char * longest_text
    frame = Frame(
        width=width,
        height=row * len(bars) + 8,
        left=label_width,
        right=text_width,
        top=4,
        bottom=4,
    )
    body: list[str] = []
    scale_max = scale_max if scale_max > 0 else 1.0
    for i, bar in enumerate(bars):
        y = frame.top + i * row
        length = frame.inner_width * min(bar.value / scale_max, 1.0)
        colour = REMOVED_COLOUR if bar.highlight else KEPT_COLOUR
        body.append(
            f'<rect x="{frame.left}" y="{y + 3}" width="{frame.inner_width:.1f}" '
            f'height="{row - 6}" fill="#f3f4f6"/>'
        )
        if length > 0:
            body.append(
                f'<rect x="{frame.left}" y="{y + 3}" width="{max(length, 1.5):.1f}" '
                f'height="{row - 6}" fill="{colour}"><title>{escape(bar.text)}</title></rect>'
            )
        body.append(
            _text(frame.left - 8, y + row / 2 + 4.5, _clip(bar.label, label_chars), anchor="end")
        )
        body.append(
            _text(frame.left + frame.inner_width + 8, y + row / 2 + 4.5, bar.text, anchor="start")
        )
    return _svg(frame, body, label)


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "\u2026"


def scatter(
    x: np.ndarray,
    y: np.ndarray,
    removed: np.ndarray,
    *,
    label: str = "embedding projection",
) -> str:
    """Points coloured by decision: kept first, removed drawn on top.

    Parameters
    ----------
    x, y : ndarray of shape (n,)
        Coordinates (any units; the chart fits their range). Callers pass a bounded sample.
    removed : ndarray of shape (n,), bool
    """
    frame = Frame(width=720, height=480, left=30, right=14, top=14, bottom=30)
    body: list[str] = [
        f'<rect x="{frame.left}" y="{frame.top}" width="{frame.inner_width}" '
        f'height="{frame.inner_height}" fill="#fbfbfc" stroke="#e3e5e8"/>'
    ]
    if len(x):
        lo_x, hi_x = float(np.min(x)), float(np.max(x))
        lo_y, hi_y = float(np.min(y)), float(np.max(y))
        pad_x = (hi_x - lo_x) * 0.05 or 1.0
        pad_y = (hi_y - lo_y) * 0.05 or 1.0
        px = frame.left + frame.inner_width * (x - lo_x + pad_x) / (hi_x - lo_x + 2 * pad_x)
        py = frame.top + frame.inner_height * (1 - (y - lo_y + pad_y) / (hi_y - lo_y + 2 * pad_y))
        for mask, colour, radius, opacity in (
            (~removed, KEPT_COLOUR, 2.0, 0.55),
            (removed, REMOVED_COLOUR, 2.6, 0.9),
        ):
            dots = "".join(
                f'<circle cx="{a:.1f}" cy="{b:.1f}" r="{radius}"/>'
                for a, b in zip(px[mask], py[mask], strict=True)
            )
            body.append(f'<g fill="{colour}" fill-opacity="{opacity}">{dots}</g>')
    body.append(
        _text(frame.left + frame.inner_width / 2, frame.height - 8, "first principal component")
    )
    y_mid = frame.top + frame.inner_height / 2
    body.append(
        _text(18, y_mid, "second principal component", transform=f"rotate(-90 18 {y_mid:.1f})")
    )
    return _svg(frame, body, label)
