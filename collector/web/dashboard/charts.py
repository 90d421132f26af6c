"""Trends drawn as SVG on the server: polylines in a fixed box, coloured by the style sheet.

Hand-written rather than a charting library: every library that draws in the browser needs
script (which the dashboard's Content-Security-Policy forbids), and the server-side ones
(matplotlib, pygal) are far heavier than the few lines a line chart takes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from datetime import datetime

WIDTH = 640
HEIGHT = 200
PAD_LEFT = 48
PAD_BOTTOM = 24
PAD_TOP = 8
PAD_RIGHT = 8


@dataclass(frozen=True)
class Line:
    name: str
    points: str  # "x,y x,y ..." for <polyline points>
    last: float | None


@dataclass(frozen=True)
class Tick:
    x: float
    y: float
    label: str


@dataclass(frozen=True)
class Chart:
    title: str
    lines: list[Line]
    y_ticks: list[Tick]
    x_ticks: list[Tick]
    width: int = WIDTH
    height: int = HEIGHT
    empty: bool = False

    @property
    def plot_left(self) -> int:
        return PAD_LEFT

    @property
    def plot_bottom(self) -> int:
        return self.height - PAD_BOTTOM


def _nice_max(value: float) -> float:
    """A round upper bound for the y axis."""
    if value <= 0:
        return 1.0
    step = 1.0
    while step * 10 < value:
        step *= 10
    for factor in (1, 2, 5, 10):
        if value <= step * factor:
            return step * factor
    return step * 10


def line_chart(
    title: str,
    moments: Sequence[datetime],
    series: Mapping[str, Sequence[float]],
    *,
    y_max: float | None = None,
    unit: str = "",
) -> Chart:
    """A chart of each series over ``moments`` (one value per moment)."""
    if len(moments) < 2:
        return Chart(title, [], [], [], empty=True)
    top = y_max or _nice_max(max((max(v) for v in series.values() if v), default=0.0))
    inner_w = WIDTH - PAD_LEFT - PAD_RIGHT
    inner_h = HEIGHT - PAD_TOP - PAD_BOTTOM
    start, end = moments[0].timestamp(), moments[-1].timestamp()
    span = max(end - start, 1.0)

    def x_of(moment: datetime) -> float:
        return round(PAD_LEFT + (moment.timestamp() - start) / span * inner_w, 1)

    def y_of(value: float) -> float:
        return round(PAD_TOP + inner_h - min(value, top) / top * inner_h, 1)

    lines = [
        Line(
            name,
            " ".join(f"{x_of(m)},{y_of(v)}" for m, v in zip(moments, values, strict=True)),
            values[-1] if values else None,
        )
        for name, values in series.items()
    ]
    y_ticks = [Tick(PAD_LEFT - 4, y_of(top * f), f"{top * f:g}{unit}") for f in (0, 0.5, 1)]
    picks = sorted({0, len(moments) // 2, len(moments) - 1})
    x_ticks = [
        Tick(x_of(moments[i]), HEIGHT - 6, moments[i].strftime("%d %b %H:%M")) for i in picks
    ]
    return Chart(title, lines, y_ticks, x_ticks)
