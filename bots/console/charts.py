"""Charts drawn on the server as inline SVG: no chart library, no script, nothing fetched.

Each chart is an <svg role="img"> with a <title> and <desc> (the figures in words, for screen
readers), scaled to the width of its box by its viewBox. Colours come from the console's
stylesheet through classes (presentation attributes only: the console's CSP forbids inline
styles). Every text is escaped.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from markupsafe import Markup, escape

_ids = itertools.count(1)

WIDTH = 420  # viewBox units: about the drawn width of a half-page card


@dataclass(frozen=True, slots=True)
class Bar:
    label: str
    value: int  # approved
    target: int | None  # quota (or members): what 100 % means
    extra: int = 0  # submitted, not yet approved (drawn lighter, after the value)


def _n(value: float) -> str:
    """A coordinate with at most one decimal."""
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _count(value: int) -> str:
    return f"{value:,}".replace(",", ".")


def _percent(part: int, whole: int | None) -> str:
    if not whole:
        return ""
    return f"{part / whole * 100:.1f}".replace(".", ",") + "%"


def _frame(kind: str, height: float, title: str, desc: str, body: list[str]) -> Markup:
    uid = f"chart{next(_ids)}"
    head = (
        f'<svg class="chart chart-{kind}" viewBox="0 0 {WIDTH} {_n(height)}" '
        f'width="100%" role="img" aria-labelledby="{uid}-t {uid}-d" '
        f'xmlns="http://www.w3.org/2000/svg">'
        f'<title id="{uid}-t">{escape(title)}</title><desc id="{uid}-d">{escape(desc)}</desc>'
    )
    return Markup(head + "".join(body) + "</svg>")


def progress_bars(bars: Sequence[Bar], title: str) -> Markup:
    """One row per unit: its name and figures as text (readable at any width), and an SVG bar
    stretched to the row's width: a track for 100 % of the target, the approved share filled
    (green once the target is reached), the submitted share lighter after it."""
    most = max((max(b.value + b.extra, b.target or 0) for b in bars), default=0) or 1
    rows: list[str] = []
    for bar in bars:
        scale = bar.target if bar.target else most
        done = min(bar.value / scale, 1.0) * 100
        extra = min((bar.value + bar.extra) / scale, 1.0) * 100 - done
        figure = _count(bar.value)
        if bar.target:
            figure += f"/{_count(bar.target)} · {_percent(bar.value, bar.target)}"
        full = " full" if bar.target and bar.value >= bar.target else ""
        shapes = ['<rect class="track" width="100" height="10"/>']
        if extra > 0:
            shapes.append(f'<rect class="extra" x="{_n(done)}" width="{_n(extra)}" height="10"/>')
        if done > 0:
            shapes.append(f'<rect class="done{full}" width="{_n(done)}" height="10"/>')
        words = f"{bar.label}: {figure}"
        rows.append(
            f'<li><span class="label">{escape(bar.label)}</span>'
            f'<span class="figure">{escape(figure)}</span>'
            f'<svg class="bar" viewBox="0 0 100 10" preserveAspectRatio="none" role="img" '
            f'aria-label="{escape(words)}" xmlns="http://www.w3.org/2000/svg">'
            f'{"".join(shapes)}</svg></li>'
        )
    if not rows:
        rows.append('<li class="muted">Chưa có số liệu.</li>')
    return Markup(f'<figure class="chart chart-bars" aria-label="{escape(title)}">'
                  f'<ul class="bars">{"".join(rows)}</ul></figure>')


def _ticks(top: int) -> list[int]:
    """Round steps from 0 to at least `top` (0, 5, 10 … or 0, 20, 40 …)."""
    if top <= 0:
        return [0, 1]
    raw = top / 4
    magnitude = 10 ** (len(str(int(raw))) - 1)
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    step = max(int(step), 1)
    out = list(range(0, top + step, step))
    return out if out[-1] >= top else [*out, out[-1] + step]


def _day(day: date) -> str:
    return day.strftime("%d/%m")


def cumulative_line(
    days: Sequence[tuple[date, int, int]], title: str, target: int | None = None
) -> Markup:
    """Running totals per day: approved (solid) and submitted (dashed), with the target as a
    horizontal line. `days`: (day, submitted total, approved total), oldest first."""
    left, right, top, bottom = 40.0, 10.0, 12.0, 30.0
    height = 230.0
    plot_w = WIDTH - left - right
    plot_h = height - top - bottom
    most = max([*(d[1] for d in days), *(d[2] for d in days), target or 0, 1])
    ticks = _ticks(most)
    ceiling = ticks[-1]
    body: list[str] = []
    first = days[0][0] if days else date.today()
    last = days[-1][0] if days else first
    span = max((last - first).days, 1)

    def x(day: date) -> float:
        return left + (day - first).days / span * plot_w if len(days) > 1 else left + plot_w / 2

    def y(value: float) -> float:
        return top + plot_h - value / ceiling * plot_h

    for tick in ticks:
        body.append(f'<line class="grid" x1="{_n(left)}" x2="{_n(WIDTH - right)}" '
                    f'y1="{_n(y(tick))}" y2="{_n(y(tick))}"/>')
        body.append(f'<text class="axis" x="{_n(left - 6)}" y="{_n(y(tick) + 4)}" '
                    f'text-anchor="end">{escape(_count(tick))}</text>')
    if target:
        body.append(f'<line class="target" x1="{_n(left)}" x2="{_n(WIDTH - right)}" '
                    f'y1="{_n(y(target))}" y2="{_n(y(target))}"/>')
        body.append(f'<text class="axis target-label" x="{_n(WIDTH - right)}" '
                    f'y="{_n(y(target) - 4)}" text-anchor="end">'
                    f"{escape('Chỉ tiêu ' + _count(target))}</text>")
    labels = [days[0][0], days[len(days) // 2][0], days[-1][0]] if days else []
    for n, day in enumerate(dict.fromkeys(labels)):
        anchor = "start" if n == 0 and len(days) > 1 else (
            "end" if day == last and len(days) > 1 else "middle")
        body.append(f'<text class="axis" x="{_n(x(day))}" y="{_n(height - 12)}" '
                    f'text-anchor="{anchor}">{escape(_day(day))}</text>')
    for index, css in ((1, "submitted"), (2, "approved")):
        # A step line: a running total holds its value until the next day with a change.
        points: list[str] = []
        previous = 0
        for day, *totals in days:
            value = totals[index - 1]
            points.append(f"{_n(x(day))},{_n(y(previous))}")
            points.append(f"{_n(x(day))},{_n(y(value))}")
            previous = value
        if points:
            body.append(f'<polyline class="line {css}" fill="none" points="{" ".join(points)}"/>')
        for day, *totals in days[-1:]:
            body.append(f'<circle class="dot {css}" cx="{_n(x(day))}" '
                        f'cy="{_n(y(totals[index - 1]))}" r="3.5"/>')
    if days:
        desc = (f"Từ {days[0][0]:%d/%m/%Y} đến {days[-1][0]:%d/%m/%Y}: "
                f"{_count(days[-1][2])} người đã được duyệt, {_count(days[-1][1])} người đã nộp"
                + (f", chỉ tiêu {_count(target)}" if target else ""))
    else:
        desc = "Chưa có ai nộp bài."
    return _frame("line", height, title, desc, body)


def weekly_columns(weeks: Sequence[tuple[date, int]], title: str) -> Markup:
    """Active participants per week (Monday's date under each column)."""
    left, right, top, bottom = 40.0, 6.0, 16.0, 28.0
    height = 200.0
    plot_w = WIDTH - left - right
    plot_h = height - top - bottom
    ticks = _ticks(max((w[1] for w in weeks), default=0))
    ceiling = ticks[-1]
    body: list[str] = []
    for tick in ticks:
        ty = top + plot_h - tick / ceiling * plot_h
        body.append(f'<line class="grid" x1="{_n(left)}" x2="{_n(WIDTH - right)}" '
                    f'y1="{_n(ty)}" y2="{_n(ty)}"/>')
        body.append(f'<text class="axis" x="{_n(left - 6)}" y="{_n(ty + 4)}" '
                    f'text-anchor="end">{escape(_count(tick))}</text>')
    slot = plot_w / max(len(weeks), 1)
    for n, (week, active) in enumerate(weeks):
        h = active / ceiling * plot_h
        bx = left + n * slot + slot * 0.15
        body.append(f'<rect class="column" x="{_n(bx)}" y="{_n(top + plot_h - h)}" '
                    f'width="{_n(slot * 0.7)}" height="{_n(h)}" rx="2"/>')
        if active:
            body.append(f'<text class="figure" x="{_n(bx + slot * 0.35)}" '
                        f'y="{_n(top + plot_h - h - 4)}" text-anchor="middle">'
                        f"{escape(_count(active))}</text>")
        body.append(f'<text class="axis" x="{_n(bx + slot * 0.35)}" y="{_n(height - 10)}" '
                    f'text-anchor="middle">{escape(_day(week))}</text>')
    desc = "; ".join(f"tuần từ {w:%d/%m}: {_count(a)} người" for w, a in weeks)
    return _frame("columns", height, title, desc or "Chưa có số liệu", body)


__all__ = ["Bar", "cumulative_line", "progress_bars", "weekly_columns"]
