"""The dashboard's charts: SVG drawn by pygal, each its own response for an ``<img>``.

The pages' Content-Security-Policy allows no inline style; pygal's SVG
carries its style sheet inline, so each chart is served apart with a policy
of its own that allows exactly that (``style-src 'unsafe-inline'``) and
nothing else: no script, no fetch, no frame.  pygal's interactive script is
switched off (``js=[]``) and its inline config ``<script>`` removed by an XML
filter (pygal's ``add_xml_filter``), so no chart carries script at all (and
an SVG shown through ``<img>`` would run none anyway).  pygal builds
the SVG with ElementTree, which escapes every label (job and channel names
come from the companies' mail headers).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pygal
from aiohttp import web
from pygal.style import Style

from consent_site.admin import ADMIN, NO_STORE, scope
from consent_site.admin_views import FUNNEL

CHART_CSP = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"
_FONTS = ("system-ui, 'Hiragino Sans', 'Hiragino Kaku Gothic ProN', 'Noto Sans CJK JP', "
          "'Noto Sans JP', 'Yu Gothic', Meiryo, sans-serif")
STYLE = Style(
    background="#ffffff", plot_background="#ffffff", foreground="#1a1a1a",
    foreground_strong="#1a1a1a", foreground_subtle="#6b7280", opacity=".9",
    opacity_hover="1", colors=("#1f3a5f", "#2e86c1", "#e08e0b", "#5b8c3a", "#a4262c"),
    font_family=_FONTS, label_font_size=13, major_label_font_size=13, value_font_size=13,
    legend_font_size=14, title_font_size=16, tooltip_font_size=13)
_UNSET = "（未設定）"
#: The funnel's stages, short enough for the chart's axis (the table has the full names).
_SHORT = {"rejections": "不採用メール", "offers": "案内リンク", "views": "閲覧",
          "accepted": "同意", "qualified_forwards": "有効紹介", "credits_earned": "クレジット"}


def _config(**extra: Any) -> dict[str, Any]:
    return {"style": STYLE, "js": [], "width": 760, "height": 340, "show_legend": True,
            "legend_at_bottom": True, "no_data_text": "データなし", "margin": 16,
            "explicit_size": False, **extra}


def _cjk_margin(labels: list[str]) -> int:
    """Room for labels in Japanese: pygal sizes its margins for Latin letters (about 0.6 em
    each), a kanji or kana takes a full em, so the longest label would be cut off."""
    wide = max((sum(1 for ch in label if ord(ch) > 0x2E80) for label in labels), default=0)
    return 16 + int(wide * STYLE.label_font_size * 0.45)


def _no_script(root: Any) -> Any:
    for parent in root.iter():
        for child in list(parent):
            if str(child.tag).rpartition("}")[2] == "script":
                parent.remove(child)
    return root


def _render(chart: Any) -> bytes:
    chart.add_xml_filter(_no_script)
    return bytes(chart.render())


def funnel(r: dict[str, Any]) -> bytes:
    stages = list(reversed(FUNNEL))  # pygal draws the first label at the bottom
    labels = [_SHORT[f] for f in stages]
    chart = pygal.HorizontalBar(**_config(show_legend=False, print_values=True,
                                          margin_left=_cjk_margin(labels)))
    chart.x_labels = labels
    chart.add("件数", [r[f] for f in stages])
    return _render(chart)


def monthly(r: dict[str, Any]) -> bytes:
    chart = pygal.Bar(**_config(x_label_rotation=0))
    months = r["monthly"]
    chart.x_labels = [m["month"] for m in months]
    chart.add("案内リンク", [m["offers"] for m in months])
    chart.add("登録に同意", [m["accepted"] for m in months])
    chart.add("有効紹介", [m["qualified"] for m in months])
    return _render(chart)


def _opt_in(rows: list[dict[str, Any]]) -> bytes:
    shown = rows[:12]  # the most offered; the table lists every one
    labels = [row["name"] or _UNSET for row in reversed(shown)]
    chart = pygal.HorizontalBar(**_config(
        show_legend=False, print_values=True, range=(0, 100), width=520,
        y_labels=[0, 25, 50, 75, 100],
        height=max(180, 70 + 40 * len(shown)), margin_left=_cjk_margin(labels),
        value_formatter=lambda v: f"{v:.0f}%"))
    chart.x_labels = labels
    chart.add("登録率", [round(row["opt_in_rate"] * 100, 1) for row in reversed(shown)])
    return _render(chart)


def outcomes(r: dict[str, Any]) -> bytes:
    """Per month, the registered and placed rates; a month left out (fewer than 5
    candidates) draws no bar rather than a number."""
    chart = pygal.Bar(**_config(x_label_rotation=0, value_formatter=lambda v: f"{v:.0f}%"))
    months = r["analytics"]["monthly"]
    chart.x_labels = [m["month"] for m in months]
    for key, label in (("registered_rate", "登録率"), ("placed_rate", "就職率")):
        chart.add(label, [None if m[key] is None else round(m[key] * 100, 1) for m in months])
    return _render(chart)


CHARTS: dict[str, Callable[[dict[str, Any]], bytes]] = {
    "funnel": funnel,
    "monthly": monthly,
    "jobs": lambda r: _opt_in(r["by_job"]),
    "channels": lambda r: _opt_in(r["by_channel"]),
    "outcomes": outcomes,
}


async def chart(request: web.Request) -> web.StreamResponse:
    draw = CHARTS.get(request.match_info["name"])
    if draw is None:
        raise web.HTTPNotFound()
    admin = request.app[ADMIN]
    s = scope(request)
    r = await admin.run(admin.report, s.company.id, s.period)
    svg = await admin.run(draw, r)
    return web.Response(body=svg, content_type="image/svg+xml",
                        headers={"Content-Security-Policy": CHART_CSP, **NO_STORE})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/charts/{name}.svg", chart)
