"""The report as one self-contained HTML page with inline SVG charts (no scripts, no external files):
OEE by hour and line, the downtime Pareto, one control chart with its limits, and the report's
tables. Input: the data of `services.report.collect`."""
from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
WIDTH, HEIGHT, PAD = 760, 280, 48


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value))


def _pct(value: float | None) -> str:
    return "" if value is None else f"{value * 100:.1f} %"


def _num(value: object, digits: int = 1) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, datetime):
        return value.isoformat(timespec="minutes")
    return str(value)


def _frame(title: str, body: str, y_ticks: Sequence[tuple[float, str]], x_labels: Sequence[tuple[float, str]]) -> str:
    ticks = "".join(f'<line x1="{PAD}" x2="{WIDTH - 10}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>'
                    f'<text x="{PAD - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11">{_e(label)}</text>'
                    for y, label in y_ticks)
    labels = "".join(f'<text x="{x:.1f}" y="{HEIGHT - PAD + 16}" text-anchor="middle" font-size="11">{_e(label)}</text>'
                     for x, label in x_labels)
    return (f'<figure><figcaption>{_e(title)}</figcaption>'
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" '
            f'role="img" aria-label="{_e(title)}">{ticks}{labels}'
            f'<line x1="{PAD}" x2="{PAD}" y1="10" y2="{HEIGHT - PAD}" stroke="#333"/>'
            f'<line x1="{PAD}" x2="{WIDTH - 10}" y1="{HEIGHT - PAD}" y2="{HEIGHT - PAD}" stroke="#333"/>'
            f'{body}</svg></figure>')


def _y(value: float, low: float, high: float) -> float:
    span = (high - low) or 1.0
    return HEIGHT - PAD - (value - low) / span * (HEIGHT - PAD - 10)


def _x(index: int, count: int) -> float:
    return PAD + 10 + (index + 0.5) * (WIDTH - PAD - 30) / max(count, 1)


def oee_by_hour_chart(rows: list[dict]) -> str:
    hours = sorted({r["period_start"] for r in rows})
    lines = sorted({r["equipment_id"] for r in rows})
    if not hours:
        return "<p>No hourly OEE yet.</p>"
    body, legend = [], []
    for n, line in enumerate(lines):
        colour = COLOURS[n % len(COLOURS)]
        points = [(hours.index(r["period_start"]), r["oee"]) for r in rows
                  if r["equipment_id"] == line and r["oee"] is not None]
        coords = " ".join(f"{_x(i, len(hours)):.1f},{_y(v * 100, 0, 100):.1f}" for i, v in points)
        body.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{coords}"/>')
        body.extend(f'<circle cx="{_x(i, len(hours)):.1f}" cy="{_y(v * 100, 0, 100):.1f}" r="3" fill="{colour}">'
                    f'<title>{_e(line)} {_pct(v)}</title></circle>' for i, v in points)
        legend.append(f'<text x="{PAD + 10 + 200 * n}" y="{HEIGHT - 8}" font-size="11" fill="{colour}">■ {_e(line)}</text>')
    x_labels = [(_x(i, len(hours)), h.strftime("%H:%M") if isinstance(h, datetime) else str(h)) for i, h in enumerate(hours)]
    return _frame("OEE by hour and line (kpi.oee_rollup; hours start in UTC)", "".join(body + legend),
                  [(_y(v, 0, 100), f"{v} %") for v in (0, 25, 50, 75, 100)], x_labels)


def pareto_chart(rows: list[dict]) -> str:
    rows = [r for r in rows if r.get("duration_s")][:12]
    if not rows:
        return "<p>No closed stops yet.</p>"
    top = max(r["duration_s"] for r in rows) / 60
    width = (WIDTH - PAD - 30) / len(rows) * 0.7
    body = []
    for i, r in enumerate(rows):
        minutes = r["duration_s"] / 60
        x, y = _x(i, len(rows)), _y(minutes, 0, top)
        body.append(f'<rect x="{x - width / 2:.1f}" y="{y:.1f}" width="{width:.1f}" height="{HEIGHT - PAD - y:.1f}" '
                    f'fill="#1f77b4"><title>{_e(r["reason_code"])}: {minutes:.1f} min, {r["stops"]} stops</title></rect>')
    cumulative = " ".join(f"{_x(i, len(rows)):.1f},{_y((r['cumulative_share'] or 0) * top, 0, top):.1f}"
                          for i, r in enumerate(rows))
    body.append(f'<polyline fill="none" stroke="#d62728" stroke-width="2" points="{cumulative}"/>')
    body.append(f'<text x="{WIDTH - 12}" y="22" text-anchor="end" font-size="11" fill="#d62728">cumulative share</text>')
    return _frame("Downtime Pareto by reason (minutes; execution.downtime_pareto)", "".join(body),
                  [(_y(top * f, 0, top), f"{top * f:.0f}") for f in (0, 0.25, 0.5, 0.75, 1)],
                  [(_x(i, len(rows)), r["reason_code"]) for i, r in enumerate(rows)])


def control_chart(chart: dict) -> str:
    points = [p for p in chart.get("rows", []) if p.get("value") is not None]
    if not chart.get("available") or not points:
        return f"<p>No control chart: {_e(chart.get('reason') or 'no points yet')}.</p>"
    limits = [v for p in points for v in (p.get("ucl"), p.get("lcl"), p.get("centre")) if v is not None]
    low, high = min(limits + [p["value"] for p in points]), max(limits + [p["value"] for p in points])
    margin = (high - low) * 0.08 or 1.0
    low, high = low - margin, high + margin
    n = len(points)
    body = []
    for key, colour, dash in (("ucl", "#d62728", "6,3"), ("lcl", "#d62728", "6,3"), ("centre", "#2ca02c", "")):
        segment = " ".join(f"{_x(i, n):.1f},{_y(p[key], low, high):.1f}" for i, p in enumerate(points) if p.get(key) is not None)
        body.append(f'<polyline fill="none" stroke="{colour}" stroke-dasharray="{dash}" points="{segment}"/>')
    body.append('<polyline fill="none" stroke="#555" stroke-width="1" points="'
                + " ".join(f"{_x(i, n):.1f},{_y(p['value'], low, high):.1f}" for i, p in enumerate(points)) + '"/>')
    for i, p in enumerate(points):
        fired = p.get("rules_fired") or []
        colour = "#d62728" if fired else "#1f77b4"
        rules = f" rules {','.join(str(r) for r in fired)}" if fired else ""
        body.append(f'<circle cx="{_x(i, n):.1f}" cy="{_y(p["value"], low, high):.1f}" r="3" fill="{colour}">'
                    f'<title>point {p["point"]}: {p["value"]:.4g}{rules}</title></circle>')
    last = points[-1]
    title = (f"Control chart {chart.get('characteristic_id')} ({last.get('chart')}; centre, UCL and LCL of the current "
             f"limits; red points fired a Nelson rule)")
    ticks = [(_y(v, low, high), f"{v:.4g}") for v in (low + margin, (low + high) / 2, high - margin)]
    step = max(1, n // 10)
    return _frame(title, "".join(body), ticks, [(_x(i, n), str(points[i]["point"])) for i in range(0, n, step)])


def _table(title: str, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<h3>{_e(title)}</h3><table><thead><tr>{head}</tr></thead><tbody>{body or ''}</tbody></table>"


def _part(title: str, part: dict, headers: Sequence[str], keys: Sequence[str]) -> str:
    if not part.get("available"):
        return f"<h3>{_e(title)}</h3><p class=na>Not available: {_e(part.get('reason') or 'no data')}</p>"
    return _table(title, headers, [[_num(r.get(k)) if not isinstance(r.get(k), list) else ",".join(map(str, r[k]))
                                    for k in keys] for r in part["rows"]])


def render(data: dict, title: str = "MOM report") -> str:
    units = [[r["equipment_id"], r.get("shift_id") or _num(r["period_start"]), _pct(r["availability"]),
              _pct(r["effectiveness"]), _pct(r["quality_ratio"]), _pct(r["oee"]), r["pq"], r["gq"]] for r in data["units"]]
    lines = [[r["equipment_id"], r.get("shift_id") or _num(r["period_start"]), _pct(r["availability"]),
              _pct(r["effectiveness"]), _pct(r["quality_ratio"]), _pct(r["oee"]), r["pq"], r["gq"]] for r in data["lines"]]
    oee_headers = ["equipment", "period", "availability", "performance", "quality", "OEE", "PQ", "GQ"]
    quality, maintenance, inventory = data.get("quality", {}), data.get("maintenance", {}), data.get("inventory", {})
    sections = [
        f"<h1>{_e(title)}</h1><p>Scope: {_e(data.get('scope') or 'all equipment')}, per {_e(data.get('period'))}.</p>",
        "<h2>Production</h2>", oee_by_hour_chart(data.get("lines_by_hour", [])),
        _table("OEE per line (sums of the units' elements)", oee_headers, lines),
        _table("OEE per work unit", oee_headers, units),
        pareto_chart(data["downtime_pareto"]),
        _table("Order progress", ["order", "product", "status", "quantity", "good", "scrap", "progress"],
               [[r["order_id"], r["product_id"], r["status"], _num(r["quantity"], 0), r["good"], r["scrap"],
                 _pct(r["progress"])] for r in data["orders"]]),
    ]
    if quality:
        sections += ["<h2>Quality</h2>", control_chart(quality.get("control_chart", {})),
                     _part("SPC rule violations", quality["spc_violations"],
                           ["when", "characteristic", "point", "equipment", "value", "rules"],
                           ["occurred_at", "characteristic_id", "point", "equipment_id", "value", "rules_fired"]),
                     _part("Open holds", quality["open_holds"], ["lot", "held at", "nonconformance", "order"],
                           ["lot_id", "held_at", "nonconformance_id", "order_id"]),
                     _part("First pass yield", quality["fpy"], ["product", "inspected", "good", "FPY"],
                           ["product_id", "inspected", "good_first_pass", "first_pass_yield"])]
    if maintenance:
        sections += ["<h2>Maintenance</h2>",
                     _part("Open work orders", maintenance["open_work_orders"], ["work order", "kind", "equipment", "status"],
                           ["work_order_id", "kind", "equipment_id", "status"]),
                     _part("Reliability (seconds)", maintenance["reliability"],
                           ["equipment", "failures", "MTBF s", "MTTR s"], ["equipment_id", "failures", "mtbf_s", "mttr_s"])]
    if inventory:
        sections += ["<h2>Inventory</h2>",
                     _part("On-hand by material", inventory["on_hand"], ["material", "unit", "on hand", "available", "held"],
                           ["material_id", "unit", "quantity", "available", "held"]),
                     _part(f"Genealogy of {inventory['genealogy_trace'].get('lot_id', '')}", inventory["genealogy_trace"],
                           ["depth", "parent lot", "into lot", "material", "quantity"],
                           ["depth", "parent_lot_id", "child_lot_id", "material_id", "quantity"])]
    style = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:1000px}table{border-collapse:collapse;"
             "margin-bottom:1em}td,th{border:1px solid #ccc;padding:2px 8px;font-size:13px;text-align:right}"
             "td:first-child,th:first-child{text-align:left}figure{margin:1em 0}figcaption{font-weight:600}.na{color:#a00}")
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{_e(title)}</title>"
            f"<style>{style}</style></head><body>{''.join(sections)}</body></html>")


def write(data: dict, path: str | Path, title: str = "MOM report") -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(data, title))
    return path


def main(argv: list[str] | None = None) -> int:
    """`python -m services.report_html OUT.html [--scope ID] [--period P] [--from T] [--to T]`: the
    HTML page from a running system (the same query as `mom report`)."""
    import argparse

    from services.report import ReportQuery, instant, report

    parser = argparse.ArgumentParser(prog="python -m services.report_html", description=main.__doc__)
    parser.add_argument("out")
    parser.add_argument("--scope")
    parser.add_argument("--period", choices=("hour", "shift", "day"), default="shift")
    parser.add_argument("--from", dest="start")
    parser.add_argument("--to", dest="end")
    args = parser.parse_args(argv)
    query = ReportQuery(scope=args.scope, period=args.period, start=args.start and instant(args.start),
                        end=args.end and instant(args.end))
    print(write(report(query), args.out).resolve())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
