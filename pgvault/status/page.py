"""The status page: the same content as `pgvault status`, server-rendered HTML with an
inline-SVG timeline of the last N days. No JavaScript; every name is HTML-escaped.

SVG elements carry data- attributes (window start/end, gap first/last segment, mark time)
so tools and tests can read the timeline without parsing pixels.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from html import escape

from pgvault.status import text
from pgvault.status.model import StatusView
from pgvault.timeutil import parse_iso

WIDTH, LEFT, RIGHT = 1180, 90, 20
ROWS = {"pitr": 40, "physical": 80, "logical": 110, "drill": 140}
HEIGHT = 180
COLOURS = {"OK": "#1a7f37", "WARNING": "#9a6700", "CRITICAL": "#cf222e", "UNKNOWN": "#6e7781"}


def e(value: object) -> str:
    return escape(str(value), quote=True)


class Scale:
    def __init__(self, now: datetime, days: int) -> None:
        self.end = now
        self.start = now - timedelta(days=days)
        self.span = (self.end - self.start).total_seconds()

    def x(self, stamp: str) -> float:
        t = (parse_iso(stamp) - self.start).total_seconds() / self.span
        return round(LEFT + min(max(t, 0.0), 1.0) * (WIDTH - LEFT - RIGHT), 1)


def timeline(view: StatusView) -> str:
    scale = Scale(parse_iso(view.checked_at), view.days)
    parts = [
        f'<svg id="timeline" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" '
        f'height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'data-from="{e(scale.start.isoformat())}" data-to="{e(view.checked_at)}" '
        f'data-days="{view.days}">',
        f'<rect x="{LEFT}" y="20" width="{WIDTH - LEFT - RIGHT}" height="{HEIGHT - 40}" '
        'fill="#f6f8fa"/>',
    ]
    for label, y in (("PITR", 40), ("base", 80), ("dumps", 110), ("drills", 140)):
        parts.append(f'<text x="8" y="{y + 5}" class="row">{label}</text>')
    for day in range(view.days + 1):
        tick = scale.start + timedelta(days=day)
        x = scale.x(tick.isoformat())
        parts.append(f'<line x1="{x}" y1="20" x2="{x}" y2="{HEIGHT - 20}" class="grid"/>')
        if day % max(1, view.days // 7) == 0:
            parts.append(
                f'<text x="{x}" y="{HEIGHT - 6}" class="tick">{tick.strftime("%m-%d")}</text>'
            )
    for start, end in view.windows:
        x1, x2 = scale.x(start), scale.x(end)
        parts.append(
            f'<rect class="window" data-start="{e(start)}" data-end="{e(end)}" x="{x1}" '
            f'y="{ROWS["pitr"] - 10}" width="{max(x2 - x1, 2.0)}" height="20" fill="#2da44e">'
            f"<title>restorable {e(start)} .. {e(end)}</title></rect>"
        )
    for g in view.gaps:
        x = scale.x(g.after or g.before or view.checked_at)
        parts.append(
            f'<rect class="gap" data-first="{e(g.first)}" data-last="{e(g.last)}" '
            f'data-after="{e(g.after or "")}" data-before="{e(g.before or "")}" '
            f'x="{x - 2}" y="{ROWS["pitr"] - 16}" width="4" height="32" fill="#cf222e">'
            f"<title>gap: {e(g.first)}..{e(g.last)} ({g.count} segment(s) missing)</title></rect>"
        )
    for m in view.marks:
        x, y = scale.x(m.at), ROWS[m.kind]
        colour = {"physical": "#0969da", "logical": "#8250df"}.get(
            m.kind, "#1a7f37" if m.ok else "#cf222e"
        )
        stroke = f"M{x - 6},{y} l4,5 l8,-10" if m.ok else f"M{x - 5},{y - 5} l10,10 m0,-10 l-10,10"
        shape = (
            f'<circle cx="{x}" cy="{y}" r="5" fill="{colour}"'
            if m.kind != "drill"
            else f'<path d="{stroke}" stroke="{colour}" stroke-width="3" fill="none"'
        )
        parts.append(
            f'<g class="mark {m.kind}" data-kind="{m.kind}" data-at="{e(m.at)}" '
            f'data-ok="{str(m.ok).lower()}">{shape}><title>{e(m.label)} at {e(m.at)}</title>'
            f"{'</circle>' if m.kind != 'drill' else '</path>'}</g>"
        )
    parts.append("</svg>")
    return "\n".join(parts)


CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #1f2328; }
h1 { font-size: 28px; margin: 0 0 4px; }
pre { background: #f6f8fa; padding: 12px; white-space: pre-wrap; font-size: 13px; }
svg text { font: 12px system-ui, sans-serif; fill: #1f2328; }
svg .grid { stroke: #d0d7de; stroke-width: 1; }
svg .tick { text-anchor: middle; fill: #57606a; }
.legend span { margin-right: 16px; }
"""


def render(view: StatusView) -> str:
    colour = COLOURS.get(view.verdict, "#6e7781")
    body = "\n".join(e(line) for line in text.lines(view)[1:])
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>pgvault {e(view.cluster)}: {e(view.verdict)}</title>"
        f"<style>{CSS}</style></head><body>"
        f'<h1 id="verdict" data-status="{e(view.verdict)}" style="color:{colour}">'
        f"{e(view.verdict)}</h1>"
        f"<p>cluster <b>{e(view.cluster)}</b>, checked {e(view.checked_at)}; "
        f"the last {view.days} days (<code>?days=N</code>)</p>"
        f"{timeline(view)}"
        '<p class="legend"><span style="color:#2da44e">&#9632; restorable (PITR)</span>'
        '<span style="color:#cf222e">&#9646; gap</span>'
        '<span style="color:#0969da">&#9679; base backup</span>'
        '<span style="color:#8250df">&#9679; dump</span>'
        '<span style="color:#1a7f37">&#10003; drill passed</span>'
        '<span style="color:#cf222e">&#10007; drill failed</span></p>'
        f'<pre id="status">{body}</pre>'
        '<p><a href="/metrics">/metrics</a></p></body></html>\n'
    )
