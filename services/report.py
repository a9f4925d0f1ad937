"""`mom report`: every domain's headline figures, read from the analyst views.

Production (kpi and execution views): OEE and its factors per work unit and line, the downtime
Pareto, order progress and WIP. Quality: SPC rule violations, open holds, nonconformances, first
pass yield and capability. Maintenance: open work orders, MTBF and MTTR per unit (sums of the
elements, never averages of ratios), preventive schedules. Inventory: on-hand by material and one
genealogy trace. A domain whose views do not exist (its service is not deployed) is shown as not
available, with the reason, and the rest of the report stands.

Reads only what the read-only `mom_analyst` role may read, so it works against any deployment:
MOM_ANALYST_DATABASE_URL when set, else the local stack's analyst URL. Ratios are printed as
percentages with one decimal; `--json` gives the same as one JSON object, with ratios as plain
fractions (0.7479, not 74.8) and NULL ratios (zero denominators) as null.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
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
    hourly = _rows(conn, f"""
        SELECT equipment_id, period_start, pbt_s, apt_s, pq, gq, {ratio_columns}
        FROM kpi.oee_rollup WHERE level = 'work_center' AND period = 'hour' AND {unit_scope} AND {period_time}
        ORDER BY equipment_id, period_start""", {**unit_args, **time_args})
    return {
        "scope": query.scope, "period": query.period, "from": query.start, "to": query.end,
        "units": units, "lines": lines, "lines_by_hour": hourly, "downtime_pareto": pareto, "orders": orders,
        "wip": wip, "quality": _quality(conn, query), "maintenance": _maintenance(conn, query),
        "inventory": _inventory(conn, query),
    }


# -- the other domains: each part optional, so a service not deployed leaves a clear gap ---------------


def _optional(conn: psycopg.Connection, sql: str, args: dict | None = None) -> dict:
    """Rows of a query on a view that may not exist yet: {"available", "rows"} or {"available", "reason"}."""
    try:
        return {"available": True, "rows": _rows(conn, sql, args or {})}
    except psycopg.Error as error:  # no such view or column, no privilege: that part is not available
        if not conn.autocommit:
            conn.rollback()
        reason = (error.diag.message_primary if getattr(error, "diag", None) else None) or str(error)
        return {"available": False, "reason": reason.strip().splitlines()[0]}


def _quality(conn: psycopg.Connection, query: ReportQuery) -> dict:
    scope, args = _scope_filter("equipment_id", query)
    when, time_args = _time_filter("occurred_at", query)
    args = {**args, **time_args}
    violations = _optional(conn, f"""
        SELECT plan_id, characteristic_id, point, occurred_at, equipment_id, order_id, lot_id, chart, value,
               centre, lcl, ucl, rules_fired
        FROM quality.spc_points
        WHERE rules_fired IS NOT NULL AND cardinality(rules_fired) > 0 AND {scope} AND {when}
        ORDER BY occurred_at, characteristic_id, point""", args)
    holds = _optional(conn, f"""
        SELECT lot_id, hold_no, held_at, nonconformance_id, equipment_id, order_id, lot_status
        FROM quality.holds WHERE active AND {scope} ORDER BY held_at, lot_id""", args)
    nonconformances = _optional(conn, f"""
        SELECT status, count(*)::bigint AS nonconformances, sum(values_outside)::bigint AS values_outside
        FROM quality.nonconformances WHERE {scope} GROUP BY status ORDER BY status""", args)
    fpy = _optional(conn, f"""
        SELECT product_id, sum(ip)::bigint AS inspected, sum(gp)::bigint AS good_first_pass,
               sum(gp)::numeric / NULLIF(sum(ip), 0) AS first_pass_yield
        FROM quality.fpy WHERE period = 'day' AND {scope} GROUP BY product_id ORDER BY product_id""", args)
    capability = _optional(conn, """
        SELECT plan_id, characteristic_id, characteristic_name, product_id, subgroup_size, n_values, mean, lsl, usl,
               cp, cpk, pp, ppk
        FROM quality.capability WHERE period = 'all' ORDER BY plan_id, characteristic_id""")
    chart = _control_chart(conn, violations)
    return {"spc_violations": violations, "open_holds": holds, "nonconformances": nonconformances, "fpy": fpy,
            "capability": capability, "control_chart": chart}


def _control_chart(conn: psycopg.Connection, violations: dict) -> dict:
    """The points of one chart with its limits: the characteristic with the most violations (else the
    most points), in its current limits version."""
    if not violations["available"]:
        return violations
    counts: dict[tuple[str, str], int] = {}
    for row in violations["rows"]:
        counts[(row["plan_id"], row["characteristic_id"])] = counts.get((row["plan_id"], row["characteristic_id"]), 0) + 1
    if counts:
        plan_id, characteristic_id = max(counts, key=lambda k: (counts[k], k))
    else:
        busiest = _optional(conn, """SELECT plan_id, characteristic_id FROM quality.spc_points
                                      GROUP BY 1, 2 ORDER BY count(*) DESC, 1, 2 LIMIT 1""")
        if not busiest["available"] or not busiest["rows"]:
            return {"available": bool(busiest["available"]), "rows": [], "reason": busiest.get("reason")}
        plan_id, characteristic_id = busiest["rows"][0]["plan_id"], busiest["rows"][0]["characteristic_id"]
    points = _optional(conn, """
        SELECT point, occurred_at, chart, value, centre, lcl, ucl, limits_version, rules_fired
        FROM quality.spc_points WHERE plan_id = %(plan)s AND characteristic_id = %(characteristic)s AND current_version
        ORDER BY point""", {"plan": plan_id, "characteristic": characteristic_id})
    return {**points, "plan_id": plan_id, "characteristic_id": characteristic_id}


def _maintenance(conn: psycopg.Connection, query: ReportQuery) -> dict:
    scope, args = _scope_filter("equipment_id", query)
    open_orders = _optional(conn, f"""
        SELECT work_order_id, kind, equipment_id, status, opened_at, started_at, description, technician_id
        FROM maintenance.work_orders WHERE status <> 'CLOSED' AND {scope} ORDER BY opened_at, work_order_id""", args)
    closed = _optional(conn, f"""
        SELECT kind, count(*)::bigint AS work_orders FROM maintenance.work_orders
        WHERE status = 'CLOSED' AND {scope} GROUP BY kind ORDER BY kind""", args)
    reliability = _optional(conn, f"""
        SELECT equipment_id, sum(failures)::bigint AS failures, sum(restored)::bigint AS restored,
               (sum(operating_us) / 1e6)::numeric(20, 6) AS operating_s,
               (sum(operating_us) / 1e6 / NULLIF(sum(failures), 0))::numeric(20, 6) AS mtbf_s,
               (sum(ttr_us) / 1e6 / NULLIF(sum(restored), 0))::numeric(20, 6) AS mttr_s,
               sum(cmt_us)::numeric / NULLIF(sum(cmt_us) + sum(pmt_us), 0) AS cm_ratio
        FROM maintenance.reliability WHERE {scope} GROUP BY equipment_id ORDER BY equipment_id""", args)
    schedule = _optional(conn, f"""
        SELECT plan_id, equipment_id, trigger_kind, dues_so_far, next_due_at, runtime_h_remaining, cycles_remaining
        FROM maintenance.pm_schedule WHERE {scope} ORDER BY plan_id""", args)
    return {"open_work_orders": open_orders, "closed_work_orders": closed, "reliability": reliability,
            "pm_schedule": schedule}


def _inventory(conn: psycopg.Connection, query: ReportQuery) -> dict:
    on_hand = _optional(conn, """
        SELECT material_id, min(unit) AS unit, sum(quantity) AS quantity, sum(available) AS available,
               sum(held) AS held, sum(lots)::bigint AS lots, count(*) FILTER (WHERE quantity <> 0)::bigint AS locations
        FROM inventory.on_hand GROUP BY material_id HAVING abs(sum(quantity)) > 1e-9 ORDER BY material_id""")
    trace: dict = _optional(conn, """
        SELECT child_lot_id, count(*)::bigint AS parents FROM inventory.genealogy
        GROUP BY child_lot_id ORDER BY count(*) DESC, child_lot_id LIMIT 1""")
    if trace["available"] and trace["rows"]:
        lot = trace["rows"][0]["child_lot_id"]
        trace = {**_optional(conn, """
            SELECT depth, parent_lot_id, child_lot_id, material_id, quantity FROM inventory.trace(%(lot)s, false)
            ORDER BY depth, parent_lot_id""", {"lot": lot}), "lot_id": lot, "direction": "backward"}
    return {"on_hand": on_hand, "genealogy_trace": trace}


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
    if "quality" in data:
        parts.append(render_domains(data))
    return "\n".join(parts)


def _section(title: str, part: dict, headers: Sequence[str], row: Callable[[dict], list[str]],
             right: set[int]) -> str:
    if not part.get("available"):
        return f"{title}\n  not available: {part.get('reason') or 'no data'}"
    return _table(title, headers, [row(r) for r in part["rows"]], right)


def _seconds(value: object, unit: float = 60.0) -> str:
    return "" if value is None else f"{float(value) / unit:.1f}"  # type: ignore[arg-type]


def _rules(value: object) -> str:
    return ",".join(str(r) for r in value) if isinstance(value, list | tuple) else _number(value)


def render_domains(data: dict) -> str:
    quality, maintenance, inventory = data["quality"], data["maintenance"], data["inventory"]
    trace = inventory["genealogy_trace"]
    trace_title = (f"\ngenealogy: ancestors of {trace['lot_id']} (inventory.trace)" if trace.get("lot_id")
                   else "\ngenealogy trace (inventory.trace)")
    parts = [
        _section("\nSPC rule violations (quality.spc_points; Nelson rules fired)", quality["spc_violations"],
                 ["when (UTC)", "characteristic", "point", "equipment", "value", "LCL", "UCL", "rules"],
                 lambda r: [_number(r["occurred_at"]), r["characteristic_id"], _number(r["point"]),
                            r["equipment_id"] or "", _fmt(r["value"], 6), _fmt(r["lcl"], 6), _fmt(r["ucl"], 6),
                            _rules(r["rules_fired"])], {2, 4, 5, 6}),
        _section("\nopen holds (quality.holds)", quality["open_holds"],
                 ["lot", "held since (UTC)", "nonconformance", "equipment", "order"],
                 lambda r: [r["lot_id"], _number(r["held_at"]), r["nonconformance_id"] or "", r["equipment_id"] or "",
                            r["order_id"] or ""], set()),
        _section("\nnonconformances (quality.nonconformances)", quality["nonconformances"],
                 ["status", "count", "values outside"],
                 lambda r: [r["status"], _number(r["nonconformances"]), _number(r["values_outside"])], {1, 2}),
        _section("\nfirst pass yield (quality.fpy)", quality["fpy"], ["product", "inspected", "good", "FPY"],
                 lambda r: [r["product_id"] or "", _number(r["inspected"]), _number(r["good_first_pass"]),
                            percent(r["first_pass_yield"])], {1, 2, 3}),
        _section("\ncapability (quality.capability, all time)", quality["capability"],
                 ["characteristic", "product", "n", "mean", "LSL", "USL", "Cp", "Cpk"],
                 lambda r: [r["characteristic_id"], r["product_id"] or "", _number(r["n_values"]),
                            _fmt(r["mean"]), _fmt(r["lsl"]), _fmt(r["usl"]), _fmt(r["cp"], 2), _fmt(r["cpk"], 2)],
                 {2, 3, 4, 5, 6, 7}),
        _section("\nopen work orders (maintenance.work_orders)", maintenance["open_work_orders"],
                 ["work order", "kind", "equipment", "status", "opened (UTC)"],
                 lambda r: [r["work_order_id"], r["kind"], r["equipment_id"], r["status"], _number(r["opened_at"])],
                 set()),
        _section("\nclosed work orders (maintenance.work_orders)", maintenance["closed_work_orders"],
                 ["kind", "count"], lambda r: [r["kind"], _number(r["work_orders"])], {1}),
        _section("\nreliability per unit (maintenance.reliability; MTBF and MTTR in minutes)",
                 maintenance["reliability"], ["equipment", "failures", "operating min", "MTBF min", "MTTR min", "CM ratio"],
                 lambda r: [r["equipment_id"], _number(r["failures"]), _seconds(r["operating_s"]), _seconds(r["mtbf_s"]),
                            _seconds(r["mttr_s"]), percent(r["cm_ratio"])], {1, 2, 3, 4, 5}),
        _section("\npreventive maintenance (maintenance.pm_schedule)", maintenance["pm_schedule"],
                 ["plan", "equipment", "trigger", "dues", "next due (UTC)", "runtime h left", "cycles left"],
                 lambda r: [r["plan_id"], r["equipment_id"], r["trigger_kind"], _number(r["dues_so_far"]),
                            _number(r["next_due_at"]), _fmt(r["runtime_h_remaining"], 2), _number(r["cycles_remaining"])],
                 {3, 5, 6}),
        _section("\non-hand by material (inventory.on_hand)", inventory["on_hand"],
                 ["material", "unit", "on hand", "available", "held", "lots", "locations"],
                 lambda r: [r["material_id"], r["unit"] or "", _fmt(r["quantity"], 2), _fmt(r["available"], 2),
                            _fmt(r["held"], 2), _number(r["lots"]), _number(r["locations"])], {2, 3, 4, 5, 6}),
        _section(trace_title, trace, ["depth", "parent lot", "into lot", "parent material", "quantity"],
                 lambda r: [_number(r["depth"]), r["parent_lot_id"], r["child_lot_id"], r["material_id"] or "",
                            _fmt(r["quantity"], 2)], {0, 4}),
    ]
    return "\n".join(parts)


def _fmt(value: object, digits: int = 4) -> str:
    if value is None:
        return ""
    return f"{float(value):.{digits}f}" if digits <= 2 else f"{float(value):.{digits}g}"  # type: ignore[arg-type]


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
