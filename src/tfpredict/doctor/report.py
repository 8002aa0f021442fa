"""Doctor's three outputs: a terminal summary (tables), the JSON object, and one self-contained HTML report
(inline CSS and inline SVG charts; nothing is fetched from the network)."""

from __future__ import annotations

import html
import json
import math
from importlib import resources
from pathlib import Path
from string import Template
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from . import Diagnosis

#: Chart colours; CHART_BLUE is what the screenshot check looks for.
CHART_BLUE = "#1f6fd1"
STAGE_COLOURS = {"read": "#1f6fd1", "convert": "#7fb0ec", "model": "#e8590c", "write": "#2b8a3e"}


def _rate(x: float | None) -> str:
    return "n/a" if x is None else f"{x:,.0f}"


def _threads(settings: dict[str, Any]) -> str:
    t, i = settings.get("threads"), settings.get("inter_op_threads")
    if t is None and i is None:
        return "TF default"
    return f"intra {t if t is not None else 'default'} / inter {i if i is not None else 'default'}"


# ------------------------------------------------------------------------------------------------- terminal


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    right = [i > 0 for i in range(len(headers))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right, strict=True)
        )

    return [line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def format_text(d: Diagnosis) -> str:
    """The terminal summary: verdict, stage table, sweeps, top ops, recommendations."""
    x = d.to_dict()
    out = [
        f"tfpredict doctor: {x['export']} on {x['data']}",
        f"sample: {x['sample_rows']:,} rows "
        f"(the first rows; {'the whole input was read' if x['whole_input_read'] else 'not all read'}), "
        f"{x['cpus']} CPUs, signature {x['signature']!r} ({x['path']} path), {x['seconds']:.0f} s",
        "",
    ]
    out.append(f"BOTTLENECK: {x['bottleneck'].upper()}")
    out.append(f"  {x['evidence']}")
    out.append("")
    rows = [
        [
            s["label"],
            _rate(s["rows_per_s"]),
            "" if s["share"] is None else f"{s['share']:.0%}",
            "" if s["of_end_to_end"] is None else f"{s['of_end_to_end']:.0%}",
        ]
        for s in x["stages"].values()
    ]
    out += _table(["stage", "rows/s", "share", "of the job's time"], rows)
    out.append("")
    sw = x["sweeps"]
    if sw["batch_size"]:
        out.append(
            "batch size (model alone): "
            + ", ".join(f"{p['batch_size']:,}: {_rate(p['rows_per_s'])}" for p in sw["batch_size"])
        )
    if sw["threads"]:
        out.append(
            "threads (model alone): "
            + ", ".join(f"{_threads(p)}: {_rate(p['rows_per_s'])}" for p in sw["threads"])
        )
    if sw["xla"]:
        out.append(
            "XLA (model alone): "
            + ", ".join(
                f"{'on' if p['xla'] else 'off'}: {_rate(p['rows_per_s'])}"
                + (f" ({p['note']})" if p.get("note") else "")
                for p in sw["xla"]
            )
        )
    reads = [p for p in sw["input_format"] if p.get("step") == "read" and p["rows_per_s"]]
    if reads:
        out.append(
            "reading the sample: " + ", ".join(f"{p['format']}: {_rate(p['rows_per_s'])}" for p in reads)
        )
    memory = [p for p in sw["input_format"] if p["format"] == "memory" and p["rows_per_s"]]
    if memory:
        out.append(f"from memory (Predictor.predict on an Arrow table): {_rate(memory[0]['rows_per_s'])}")
    if sw["end_to_end"]:
        out.append("")
        out += _table(
            ["pipelined job (sample)", "batch", "rows/s"],
            [[_threads(p), f"{p['batch_size']:,}", _rate(p["rows_per_s"])] for p in sw["end_to_end"]],
        )
    if x["top_ops"]:
        out.append("")
        out += _table(
            ["top ops (one batch)", "op", "category", "ms", "share"],
            [
                [_short(o["name"], 48), o["op"], o["category"], f"{o['ms']:.2f}", f"{o['share']:.0%}"]
                for o in x["top_ops"][:8]
            ],
        )
    out.append("")
    out.append("RECOMMENDATIONS")
    for r in x["recommendations"]:
        out.append(f"  - {r['text']}")
    flags = " ".join(x["recommended"]["flags"])
    out.append(f"  => tfpredict predict {x['export']} DATA -o OUT {flags}")
    if x["skipped"]:
        out.append(f"(skipped within the time budget: {'; '.join(x['skipped'])})")
    return "\n".join(out)


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else "…" + text[-(width - 1) :]


def format_json(d: Diagnosis) -> str:
    return json.dumps(d.to_dict(), indent=2)


# ----------------------------------------------------------------------------------------------- SVG charts


def _esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def stage_chart(stages: dict[str, Any], width: int = 760) -> str:
    """Horizontal bars: seconds per million rows of each stage alone, and the pipelined job for comparison."""
    items = [(k, s) for k, s in stages.items() if s["rows_per_s"]]
    if not items:
        return "<p>No stage measured.</p>"
    cost = {k: 1e6 / s["rows_per_s"] for k, s in items}
    top = max(cost.values())
    row_h, left, right = 34, 210, 290
    h = row_h * len(items) + 30
    plot = width - left - right
    parts = [
        f'<svg class="chart" id="stage-chart" role="img" aria-label="time per million rows by stage" '
        f'width="{width}" height="{h}" viewBox="0 0 {width} {h}" xmlns="http://www.w3.org/2000/svg">'
    ]
    for i, (k, s) in enumerate(items):
        y = 10 + i * row_h
        w = max(2.0, plot * cost[k] / top)
        colour = STAGE_COLOURS.get(k, "#868e96")
        share = "" if s["share"] is None else f" · {s['share']:.0%}"
        parts.append(
            f'<text x="{left - 8}" y="{y + 19}" text-anchor="end" class="lbl">{_esc(s["label"])}</text>'
        )
        parts.append(
            f'<rect x="{left}" y="{y + 4}" width="{w:.1f}" height="{row_h - 10}" fill="{colour}" rx="3">'
            f"<title>{_esc(s['label'])}: {_rate(s['rows_per_s'])} rows/s</title></rect>"
        )
        parts.append(
            f'<text x="{left + w + 6:.1f}" y="{y + 19}" class="val">{cost[k]:,.2f} s/M rows '
            f"({_rate(s['rows_per_s'])} rows/s{share})</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def line_chart(
    points: list[tuple[float, float]],
    xlabel: str,
    ylabel: str,
    chart_id: str,
    highlight: float | None = None,
    width: int = 760,
    height: int = 300,
) -> str:
    """Rows/s against a log2 x axis (batch size), as an SVG polyline with labelled points."""
    pts = [(x, y) for x, y in points if y]
    if not pts:
        return "<p>Not measured.</p>"
    left, right, top, bottom = 80, 30, 20, 50
    pw, ph = width - left - right, height - top - bottom
    lx = [math.log2(max(x, 1)) for x, _ in pts]
    x0, x1 = min(lx), max(lx)
    y1 = max(y for _, y in pts) * 1.1

    def sx(v: float) -> float:
        return left + (pw * (math.log2(max(v, 1)) - x0) / (x1 - x0) if x1 > x0 else pw / 2)

    def sy(v: float) -> float:
        return top + ph - ph * v / y1

    parts = [
        f'<svg class="chart" id="{chart_id}" role="img" aria-label="{_esc(ylabel)} by {_esc(xlabel)}" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">'
    ]
    for k in range(5):  # horizontal grid with rows/s labels
        v = y1 * k / 4
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{sy(v):.1f}" y2="{sy(v):.1f}" class="grid"/>')
        parts.append(f'<text x="{left - 6}" y="{sy(v) + 4:.1f}" text-anchor="end" class="ax">{v:,.0f}</text>')
    parts.append(
        f'<polyline fill="none" stroke="{CHART_BLUE}" stroke-width="3" points="'
        + " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
        + '"/>'
    )
    for x, y in pts:
        r = 7 if highlight is not None and x == highlight else 4.5
        fill = "#e8590c" if highlight is not None and x == highlight else CHART_BLUE
        parts.append(
            f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="{r}" fill="{fill}">'
            f"<title>{x:,.0f}: {y:,.0f} rows/s</title></circle>"
        )
        parts.append(
            f'<text x="{sx(x):.1f}" y="{top + ph + 18}" text-anchor="middle" class="ax">{x:,.0f}</text>'
        )
    parts.append(
        f'<text x="{left + pw / 2}" y="{height - 8}" text-anchor="middle" class="lbl">{_esc(xlabel)}</text>'
    )
    parts.append(
        f'<text x="14" y="{top + ph / 2}" transform="rotate(-90 14 {top + ph / 2})" text-anchor="middle" '
        f'class="lbl">{_esc(ylabel)}</text>'
    )
    parts.append("</svg>")
    return "".join(parts)


def bar_chart(
    items: list[tuple[str, float | None]], chart_id: str, unit: str = "rows/s", width: int = 760
) -> str:
    """Horizontal bars of rows/s for named settings (formats, thread settings)."""
    measured = [(k, v) for k, v in items if v]
    if not measured:
        return "<p>Not measured.</p>"
    top = max(v for _, v in measured)
    row_h, left, right = 30, 210, 150
    h = row_h * len(measured) + 20
    plot = width - left - right
    parts = [
        f'<svg class="chart" id="{chart_id}" role="img" width="{width}" height="{h}" '
        f'viewBox="0 0 {width} {h}" xmlns="http://www.w3.org/2000/svg">'
    ]
    for i, (k, v) in enumerate(measured):
        y = 8 + i * row_h
        w = max(2.0, plot * v / top)
        parts.append(f'<text x="{left - 8}" y="{y + 17}" text-anchor="end" class="lbl">{_esc(k)}</text>')
        parts.append(
            f'<rect x="{left}" y="{y + 3}" width="{w:.1f}" height="{row_h - 9}" fill="{CHART_BLUE}" rx="3"/>'
        )
        parts.append(f'<text x="{left + w + 6:.1f}" y="{y + 17}" class="val">{v:,.0f} {unit}</text>')
    parts.append("</svg>")
    return "".join(parts)


# ----------------------------------------------------------------------------------------------------- HTML


def _html_table(headers: list[str], rows: list[list[Any]], cls: str = "") -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _stage_rows(x: dict[str, Any]) -> list[list[str]]:
    return [
        [
            s["label"],
            _rate(s["rows_per_s"]),
            "" if s["share"] is None else f"{s['share']:.0%}",
            "" if s["of_end_to_end"] is None else f"{s['of_end_to_end']:.0%}",
            f"{s['rows']:,}",
            f"{s['seconds']:.3f}",
        ]
        for s in x["stages"].values()
    ]


def _thread_rows(sw: dict[str, Any]) -> list[list[str]]:
    rows = [[_threads(p), "model alone", _rate(p["rows_per_s"]), p.get("note", "")] for p in sw["threads"]]
    rows += [
        [
            _threads(p),
            f"model alone, XLA {'on' if p['xla'] else 'off'}",
            _rate(p["rows_per_s"]),
            p.get("note", ""),
        ]
        for p in sw["xla"]
    ]
    rows += [
        [_threads(p), f"pipelined job, batch {p['batch_size']:,}", _rate(p["rows_per_s"]), ""]
        for p in sw["end_to_end"]
    ]
    return rows


def render_html(d: Diagnosis) -> str:
    """One self-contained HTML page: no scripts, fonts, images or styles from anywhere else."""
    x = d.to_dict()
    sw = x["sweeps"]
    stages_rows = _stage_rows(x)
    batch = line_chart(
        [(p["batch_size"], p["rows_per_s"]) for p in sw["batch_size"]],
        "batch size (rows per call)",
        "rows/s",
        "batch-chart",
        highlight=x["recommended"]["batch_size"],
    )
    thread_rows = _thread_rows(sw)
    thread_chart = bar_chart(
        [(f"{_threads(p)}, batch {p['batch_size']:,}", p["rows_per_s"]) for p in sw["end_to_end"]],
        "threads-chart",
    )
    formats = [
        (f"{p['format']} ({p['step'].replace('_', ' ')})", p["rows_per_s"]) for p in sw["input_format"]
    ]
    format_notes = [f"{p['format']}: {p['note']}" for p in sw["input_format"] if p.get("note")]
    ops_rows = [
        [o["name"], o["op"], o["category"], f"{o['ms']:.3f}", f"{o['share']:.1%}"] for o in x["top_ops"]
    ]
    cats = " · ".join(f"{k}: {v:.0%}" for k, v in x["op_categories"].items())
    recs = "".join(
        f"<li><b>{_esc(r['kind'].replace('_', ' '))}</b>: {_esc(r['text'])}</li>"
        for r in x["recommendations"]
    )
    per_row = sw["per_row"]
    values = {
        "title": _esc(f"tfpredict doctor — {Path(x['export']).name}"),
        "export": _esc(x["export"]),
        "data": _esc(x["data"]),
        "meta": _esc(
            f"{x['sample_rows']:,} sample rows · {x['cpus']} CPUs · signature {x['signature']!r} "
            f"({x['path']} path) · measured in {x['seconds']:.0f} s of a {x['budget_seconds']:.0f} s budget"
        ),
        "bottleneck": _esc(x["bottleneck"]),
        "evidence": _esc(x["evidence"]),
        "command": _esc(f"tfpredict predict {x['export']} DATA -o OUT {' '.join(x['recommended']['flags'])}"),
        "recommendations": recs,
        "stage_chart": stage_chart(x["stages"]),
        "stage_table": _html_table(
            ["stage", "rows/s", "share", "of the job's time", "rows", "seconds"], stages_rows
        ),
        "batch_chart": batch,
        "batch_table": _html_table(
            ["batch size", "rows/s (model alone)"],
            [[f"{p['batch_size']:,}", _rate(p["rows_per_s"])] for p in sw["batch_size"]],
        ),
        "per_row": _esc(
            f"one predict() call per row: {_rate(per_row['rows_per_s'])} rows/s" if per_row else ""
        ),
        "thread_chart": thread_chart,
        "thread_table": _html_table(["threads", "measured", "rows/s", "note"], thread_rows),
        "format_chart": bar_chart(formats, "format-chart"),
        "format_notes": _esc("; ".join(format_notes)),
        "ops_table": _html_table(["node", "op", "category", "ms", "share"], ops_rows, "ops")
        if ops_rows
        else "<p>No trace.</p>",
        "op_categories": _esc(cats),
        "skipped": _esc("; ".join(x["skipped"]) or "nothing"),
        "json": json.dumps(x).replace("</", "<\\/"),  # raw text inside <script>
    }
    template = resources.files("tfpredict.doctor").joinpath("report.html").read_text(encoding="utf-8")
    return Template(template).substitute(values)


def write_html(d: Diagnosis, path: str | Path) -> Path:
    out = Path(path)
    out.write_text(render_html(d), encoding="utf-8")
    return out
