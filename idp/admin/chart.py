"""The dashboard's chart of sign-ins and failures per hour, drawn on the server as SVG markup: no
script and no third-party asset (the CSP allows neither), and only presentation attributes, never
``style`` (which the CSP's style-src would refuse inline).

The chart is an image with a name and a description (``role="img"``, ``aria-labelledby``); the page
puts the same numbers in a table next to it for screen readers and for copying.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from idp.admin.dashboard import Hour

WIDTH, HEIGHT = 720, 240
LEFT, RIGHT, TOP, BOTTOM = 44, 8, 12, 40
# Graphical objects need 3:1 against the white background (WCAG 2.2 SC 1.4.11).
SIGN_IN_COLOUR = "#1a7f37"
FAILURE_COLOUR = "#b42318"
AXIS_COLOUR = "#57606a"


def _scale_top(peak: int) -> int:
    """A round value at or above ``peak`` for the y axis (1, 2 or 5 times a power of ten), at least 1."""
    step = 1
    while True:
        for factor in (1, 2, 5):
            if peak <= step * factor:
                return step * factor
        step *= 10


def hourly_chart(hours: Sequence[Hour], *, chart_id: str = "sign-in-chart") -> str:
    """The SVG markup (every interpolated text escaped: the page includes it as it is)."""
    total_in = sum(hour.sign_ins for hour in hours)
    total_failed = sum(hour.failures for hour in hours)
    top = _scale_top(max([0, *(max(hour.sign_ins, hour.failures) for hour in hours)]))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / max(1, len(hours))
    bar = max(1.0, slot * 0.38)

    def y(value: int) -> float:
        return TOP + plot_h - plot_h * value / top

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'class="chart" id="{chart_id}" aria-labelledby="{chart_id}-title {chart_id}-desc">',
        f'<title id="{chart_id}-title">Sign-ins and failures per hour, last {len(hours)} hours (UTC)</title>',
        f'<desc id="{chart_id}-desc">{total_in} successful sign-ins and {total_failed} failed attempts; '
        f"the table below has every hour.</desc>",
        # Light in dark mode too: the colours are chosen against white.
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>',
    ]
    for value in (0, top // 2, top) if top > 1 else (0, top):
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(value):.1f}" y2="{y(value):.1f}" '
            f'stroke="#d0d7de" stroke-width="1"/>'
            f'<text x="{LEFT - 6}" y="{y(value) + 4:.1f}" text-anchor="end" font-size="12" '
            f'fill="{AXIS_COLOUR}">{value}</text>'
        )
    for index, hour in enumerate(hours):
        x = LEFT + index * slot + (slot - 2 * bar) / 2
        label = escape(f"{hour.start:%H}:00: {hour.sign_ins} sign-ins, {hour.failures} failures")
        parts.append(f"<g><title>{label}</title>")
        for offset, value, colour in ((0.0, hour.sign_ins, SIGN_IN_COLOUR), (bar, hour.failures, FAILURE_COLOUR)):
            if value:
                parts.append(
                    f'<rect x="{x + offset:.1f}" y="{y(value):.1f}" width="{bar:.1f}" '
                    f'height="{TOP + plot_h - y(value):.1f}" fill="{colour}"/>'
                )
        parts.append("</g>")
        if index % 3 == 0:
            parts.append(
                f'<text x="{x + bar:.1f}" y="{TOP + plot_h + 16}" text-anchor="middle" font-size="12" '
                f'fill="{AXIS_COLOUR}">{hour.start:%H}:00</text>'
            )
    legend_y = HEIGHT - 8
    parts.append(
        f'<rect x="{LEFT}" y="{legend_y - 10}" width="12" height="12" fill="{SIGN_IN_COLOUR}"/>'
        f'<text x="{LEFT + 18}" y="{legend_y}" font-size="12" fill="#1f2328">Sign-ins</text>'
        f'<rect x="{LEFT + 100}" y="{legend_y - 10}" width="12" height="12" fill="{FAILURE_COLOUR}"/>'
        f'<text x="{LEFT + 118}" y="{legend_y}" font-size="12" fill="#1f2328">Failures</text>'
    )
    parts.append("</svg>")
    return "".join(parts)
