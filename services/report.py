"""`mom report`: OEE, the downtime Pareto, order progress and WIP, read from the analyst views.

Reads only what the read-only `mom_analyst` role may read (the kpi and execution views), so it
works against any deployment: MOM_ANALYST_DATABASE_URL when set, else the local stack's analyst URL.
Ratios are printed as percentages with one decimal; `--json` gives the same as one JSON object,
with ratios as plain fractions (0.7479, not 74.8) and NULL ratios (zero denominators) as null.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

import psycopg
from psycopg.rows import dict_row

PERIODS = ("hour", "shift", "day")
RATIOS = ("availability", "effectiveness", "quality_ratio", "oee")


@dataclass(frozen=True)
class ReportQuery:
    scope: str | None = None          # an equipment id: that piece of equipment and everything below it
    period: str = "shift"             # hour, shift or day
    start: datetime | None = None     # periods starting at or after this instant
    end: datetime | None = None       # periods starting before this instant

    def __post_init__(self) -> None:
        if self.period not in PERIODS:
            raise ValueError(f"period must be one of {', '.join(PERIODS)}, got {self.period!r}")


def analyst_url() -> str:
    """MOM_ANALYST_DATABASE_URL, else the local stack's `mom_analyst` URL."""
    if os.environ.get("MOM_ANALYST_DATABASE_URL"):
        return os.environ["MOM_ANALYST_DATABASE_URL"]
    from services.common import localstack

    return localstack.status(localstack.StackConfig.from_env())["database"]["analyst_url"]


def _scope_filter(column: str, query: ReportQuery) -> tuple[str, dict]:
    if query.scope is None:
        return "true", {}
    return (f"({column} = %(scope)s OR {column} LIKE %(scope_below)s)",
            {"scope": query.scope, "scope_below": query.scope.replace("%", r"\%").replace("_", r"\_") + ".%"})


def _time_filter(column: str, query: ReportQuery) -> tuple[str, dict]:
    clauses, args = [], {}
    if query.start is not None:
        clauses.append(f"{column} >= %(start)s")
        args["start"] = query.start
    if query.end is not None:
        clauses.append(f"{column} < %(end)s")
        args["end"] = query.end
    return (" AND ".join(clauses) or "true"), args


def _rows(conn: psycopg.Connection, sql: str, args: dict) -> list[dict]:
    return [{k: _plain(v) for k, v in row.items()} for row in conn.execute(sql, args).fetchall()]


def _plain(value: object) -> object:
    if isinstance(value, Decimal):
        return float(value)
    return value


def collect(conn: psycopg.Connection, query: ReportQuery) -> dict:
    """The report's data, read from the views; every value JSON-ready except datetimes."""
    conn.row_factory = dict_row  # type: ignore[assignment]
    unit_scope, unit_args = _scope_filter("equipment_id", query)
    period_time, time_args = _time_filter("period_start", query)
    args = {**unit_args, **time_args, "period": query.period}
    ratio_columns = ", ".join(RATIOS)
    units = _rows(conn, f"""
        SELECT equipment_id, period, label, period_start, period_end, shift_id, version, covered_until,
               pbt_s, apt_s, adet_s, pq, gq, sq, {ratio_columns}
        FROM kpi.oee WHERE period = %(period)s AND {unit_scope} AND {period_time}
        ORDER BY equipment_id, period_start""", args)
    lines = _rows(conn, f"""
        SELECT equipment_id, level, period, period_start, period_end, shift_id, work_units,
               pbt_s, apt_s, adet_s, pq, gq, sq, {ratio_columns}
        FROM kpi.oee_rollup WHERE level = 'work_center' AND period = %(period)s AND {unit_scope} AND {period_time}
        ORDER BY equipment_id, period_start""", args)
    if query.start is None and query.end is None:
        pareto = _rows(conn, f"""
            SELECT reason_code, string_agg(DISTINCT classification, ', ') AS classification,
                   sum(stops)::bigint AS stops, sum(duration_s)::float AS duration_s
            FROM execution.downtime_pareto WHERE {unit_scope}
            GROUP BY reason_code ORDER BY duration_s DESC, reason_code""", unit_args)
    else:  # the Pareto view covers all time; for a range, the same grouping over the stops that started in it
        stop_time, stop_args = _time_filter("started_at", query)
        pareto = _rows(conn, f"""
            SELECT coalesce(reason_code, '(none)') AS reason_code,
                   string_agg(DISTINCT classification, ', ') AS classification,
                   count(*)::bigint AS stops, sum(duration_s)::float AS duration_s
            FROM execution.downtime WHERE ended_at IS NOT NULL AND {unit_scope} AND {stop_time}
            GROUP BY 1 ORDER BY duration_s DESC, reason_code""", {**unit_args, **stop_args})
    total = sum(row["duration_s"] or 0 for row in pareto)
    running = 0.0
    for row in pareto:
        running += row["duration_s"] or 0
        row["share"] = (row["duration_s"] or 0) / total if total else None
        row["cumulative_share"] = running / total if total else None
    wip = _rows(conn, f"""
        SELECT order_id, operation, equipment_id, product_id, status, in_process, started_at, completed_at,
               good, scrap, rework, remaining
        FROM execution.wip WHERE {unit_scope} ORDER BY order_id, operation, equipment_id""", unit_args)
    order_scope = "true" if query.scope is None else f"""order_id IN (
        SELECT order_id FROM execution.wip WHERE {unit_scope})"""
    orders = _rows(conn, f"""
        SELECT order_id, product_id, status, quantity, good, scrap, due_at, started_at, completed_at,
               good::numeric / NULLIF(quantity, 0) AS progress
        FROM execution.orders WHERE {order_scope} ORDER BY order_id""", unit_args)
    return {
        "scope": query.scope, "period": query.period, "from": query.start, "to": query.end,
        "units": units, "lines": lines, "downtime_pareto": pareto, "orders": orders, "wip": wip,
    }


def report(query: ReportQuery, url: str | None = None) -> dict:
    with psycopg.connect(url or analyst_url(), autocommit=True) as conn:
        return collect(conn, query)


# -- presentation ------------------------------------------------------------------------------------


def percent(value: float | None) -> str:
    return "" if value is None else f"{value * 100:.1f} %"


def _number(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.0f}" if value == int(value) else f"{value:.1f}"
    if isinstance(value, datetime):
        return value.isoformat(timespec="minutes")
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _table(title: str, headers: Sequence[str], rows: list[list[str]], right: set[int]) -> str:
    lines = [title]
    if not rows:
        return "\n".join([*lines, "  (none)"])
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  " + "  ".join(c.rjust(w) if i in right else c.ljust(w)
                                for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    return "\n".join([*lines, line(headers), *(line(r) for r in rows)])


def _oee_rows(rows: list[dict], query: ReportQuery) -> list[list[str]]:
    out = []
    for r in rows:
        label = r["shift_id"] if query.period == "shift" else r.get("label") or _number(r["period_start"])
        out.append([r["equipment_id"], label or "", _number(r["period_start"]), percent(r["availability"]),
                    percent(r["effectiveness"]), percent(r["quality_ratio"]), percent(r["oee"]),
                    _number(r["pq"]), _number(r["gq"]), _number(r.get("version", r.get("work_units")))])
    return out


def render(data: dict, query: ReportQuery) -> str:
    oee_headers = ["equipment", query.period, "start (UTC)", "availability", "performance", "quality", "OEE",
                   "PQ", "GQ"]
    right = {3, 4, 5, 6, 7, 8, 9}
    scope = query.scope or "all equipment"
    parts = [
        f"report for {scope}, per {query.period}"
        + (f", from {query.start.isoformat()}" if query.start else "")
        + (f", to {query.end.isoformat()}" if query.end else ""),
        _table("\nOEE per work unit (kpi.oee; performance = ISO 22400 effectiveness)",
               [*oee_headers, "version"], _oee_rows(data["units"], query), right),
        _table("\nOEE per line (kpi.oee_rollup: sums of the units' elements)",
               [*oee_headers, "units"], _oee_rows(data["lines"], query), right),
        _table("\ndowntime Pareto by reason (execution.downtime_pareto; closed stops)",
               ["reason", "classification", "stops", "minutes", "share", "cumulative"],
               [[r["reason_code"], r["classification"], _number(r["stops"]), f"{(r['duration_s'] or 0) / 60:.1f}",
                 percent(r["share"]), percent(r["cumulative_share"])] for r in data["downtime_pareto"]],
               {2, 3, 4, 5}),
        _table("\norder progress (execution.orders; good and scrap of the routing's last operation)",
               ["order", "product", "status", "quantity", "good", "scrap", "progress", "due (UTC)"],
               [[r["order_id"], r["product_id"], r["status"], _number(r["quantity"]), _number(r["good"]),
                 _number(r["scrap"]), percent(r["progress"]), _number(r["due_at"])] for r in data["orders"]],
               {3, 4, 5, 6}),
        _table("\nWIP by operation (execution.wip)",
               ["order", "operation", "equipment", "status", "good", "scrap", "rework", "remaining"],
               [[r["order_id"], r["operation"], r["equipment_id"], r["status"], _number(r["good"]),
                 _number(r["scrap"]), _number(r["rework"]), _number(r["remaining"])] for r in data["wip"]],
               {4, 5, 6, 7}),
    ]
    return "\n".join(parts)


def _json_default(value: object) -> object:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"not JSON serialisable: {value!r}")


def to_json(data: dict) -> str:
    return json.dumps(data, default=_json_default, indent=2)


def run(query: ReportQuery, as_json: bool = False, url: str | None = None) -> str:
    """The report as text (or JSON), ready to print."""
    data = report(query, url)
    return to_json(data) if as_json else render(data, query)


def instant(value: str) -> datetime:
    """An RFC 3339 instant from the command line; a value without an offset is taken as UTC."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        from datetime import UTC

        parsed = parsed.replace(tzinfo=UTC)
    return parsed
