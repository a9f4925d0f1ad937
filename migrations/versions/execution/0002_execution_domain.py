"""Execution's domain: reference data, orders and WIP, the equipment timeline, KPI periods and views.

Facts are kept as rows (state changes, production and scrap reports, lockouts, attendance, reason
assignments), so every KPI period is recomputed from facts and a replay gives identical tables.
Durations are stored as exact microseconds (bigint); views present seconds.

Revision ID: execution_0002
Revises: execution_0001
"""
from alembic import op

from services.common.migrations import grant_views_to_analysts

revision = "execution_0002"
down_revision = "execution_0001"
branch_labels = None
depends_on = None

ELEMENTS = ("pot", "pdot", "pbt", "apt", "asut", "adet", "adot", "aupt", "aubt", "aoet", "apat", "apwt",
            "out_of_shift", "data_gap", "ideal")
COUNTS = ("pq", "gq", "sq", "rq", "unrated")


def _element_columns() -> str:
    return ",\n        ".join([f"{e}_us bigint NOT NULL" for e in ELEMENTS] + [f"{c} bigint NOT NULL" for c in COUNTS])


def _seconds(prefix: str = "") -> str:
    return ",\n        ".join([f"({prefix}{e}_us / 1e6)::numeric(20, 6) AS {e}_s" for e in ELEMENTS]
                              + [f"{prefix}{c}" for c in COUNTS])


def _ratios(p: str = "") -> str:
    """Every ratio as an exact fraction of stored elements; NULL when the denominator is zero."""
    def r(num: str, den: str) -> str:
        return f"({num})::numeric / NULLIF({den}, 0)"
    availability = r(f"{p}apt_us", f"{p}pbt_us")
    effectiveness = r(f"{p}ideal_us", f"{p}apt_us")
    quality = r(f"{p}gq", f"{p}pq")
    return ",\n        ".join([
        f"{availability} AS availability",
        f"{effectiveness} AS effectiveness",
        f"{quality} AS quality_ratio",
        f"{availability} * {effectiveness} * {quality} AS oee",
        f"{r(f'{p}aupt_us', f'{p}pbt_us')} * {effectiveness} * {quality} AS nee",
        f"{r(f'{p}asut_us', f'{p}aupt_us')} AS setup_ratio",
        f"{r(f'{p}apt_us', f'{p}apt_us + {p}adet_us')} AS technical_efficiency",
        f"{r(f'{p}aubt_us', f'{p}pbt_us')} AS allocation_efficiency",
        f"{r(f'{p}apt_us', f'{p}aubt_us')} AS utilization_efficiency",
        f"{r(f'{p}pq * 1e6', f'{p}aoet_us')} AS throughput_rate",
        f"{r(f'{p}apt_us', f'{p}aoet_us')} AS production_process_ratio",
        f"{r(f'{p}aubt_us', f'{p}aoet_us')} AS allocation_ratio",
        f"{r(f'{p}sq', f'{p}pq')} AS scrap_ratio",
        f"{r(f'{p}rq', f'{p}pq')} AS rework_ratio",
        f"{r(f'{p}apwt_us', f'{p}apat_us')} AS worker_efficiency",
    ])


def upgrade() -> None:
    op.execute("DROP VIEW hourly_counts")
    op.execute("DROP TABLE part_counts_hourly")
    op.execute("""CREATE TABLE equipment (
        equipment_id text PRIMARY KEY,
        name text NOT NULL,
        parent_id text,
        level text NOT NULL,
        time_zone text,
        capacity_per_hour bigint,
        occurred_at timestamptz NOT NULL)""")
    op.execute("""CREATE TABLE shifts (
        shift_id text PRIMARY KEY,
        equipment_id text NOT NULL,
        starts_at timestamptz NOT NULL,
        ends_at timestamptz NOT NULL,
        breaks jsonb NOT NULL,
        occurred_at timestamptz NOT NULL,
        recorded_at timestamptz NOT NULL)""")
    op.execute("CREATE INDEX shifts_by_time ON shifts (starts_at, ends_at)")
    op.execute("""CREATE TABLE products (
        product_id text PRIMARY KEY,
        name text,
        ideal_cycle_time_s double precision,
        bom jsonb NOT NULL,
        routing jsonb NOT NULL)""")
    op.execute("""CREATE TABLE order_state (
        order_id text PRIMARY KEY,
        product_id text NOT NULL,
        quantity double precision NOT NULL,
        due_at timestamptz,
        status text NOT NULL,
        started_at timestamptz,
        completed_at timestamptz,
        material_loaded boolean NOT NULL)""")
    op.execute("""CREATE TABLE operation_state (
        order_id text NOT NULL,
        operation text NOT NULL,
        equipment_id text NOT NULL,
        status text NOT NULL,
        started_at timestamptz,
        completed_at timestamptz,
        good bigint NOT NULL,
        scrap bigint NOT NULL,
        rework bigint NOT NULL,
        PRIMARY KEY (order_id, operation, equipment_id))""")
    op.execute("CREATE INDEX operation_state_by_unit ON operation_state (equipment_id, status)")
    op.execute("""CREATE TABLE state_changes (
        equipment_id text NOT NULL,
        occurred_at timestamptz NOT NULL,
        event_id text NOT NULL,
        state text NOT NULL,
        reason_code text,
        recorded_at timestamptz NOT NULL,
        PRIMARY KEY (equipment_id, occurred_at, event_id))""")
    op.execute("""CREATE TABLE production (
        event_id text PRIMARY KEY,
        equipment_id text NOT NULL,
        occurred_at timestamptz NOT NULL,
        good bigint NOT NULL,
        reject bigint NOT NULL,
        ideal_us bigint,
        order_id text,
        recorded_at timestamptz NOT NULL)""")
    op.execute("CREATE INDEX production_by_unit_time ON production (equipment_id, occurred_at)")
    op.execute("""CREATE TABLE scrap (
        event_id text PRIMARY KEY,
        equipment_id text NOT NULL,
        occurred_at timestamptz NOT NULL,
        quantity bigint NOT NULL,
        rework boolean NOT NULL,
        order_id text,
        reason_code text,
        recorded_at timestamptz NOT NULL)""")
    op.execute("CREATE INDEX scrap_by_unit_time ON scrap (equipment_id, occurred_at)")
    op.execute("""CREATE TABLE lockouts (
        equipment_id text NOT NULL,
        work_order_id text NOT NULL,
        locked_at timestamptz,
        released_at timestamptz,
        recorded_at timestamptz NOT NULL,
        PRIMARY KEY (equipment_id, work_order_id))""")
    op.execute("""CREATE TABLE attendance (
        operator_id text NOT NULL,
        equipment_id text NOT NULL,
        signed_in_at timestamptz NOT NULL,
        signed_out_at timestamptz,
        recorded_at timestamptz NOT NULL,
        PRIMARY KEY (operator_id, equipment_id, signed_in_at))""")
    op.execute("""CREATE TABLE reason_assignments (
        equipment_id text NOT NULL,
        since timestamptz NOT NULL,
        occurred_at timestamptz NOT NULL,
        event_id text NOT NULL,
        reason_code text NOT NULL,
        PRIMARY KEY (equipment_id, since, occurred_at, event_id))""")
    op.execute("""CREATE TABLE unit_clock (
        equipment_id text PRIMARY KEY,
        known_until timestamptz NOT NULL,
        total_runtime_us bigint NOT NULL DEFAULT 0,
        total_cycles bigint NOT NULL DEFAULT 0)""")
    op.execute("""CREATE TABLE late_events (
        event_id text PRIMARY KEY,
        event_type text NOT NULL,
        equipment_id text NOT NULL,
        occurred_at timestamptz NOT NULL,
        recorded_at timestamptz NOT NULL,
        known_until timestamptz NOT NULL)""")
    op.execute(f"""CREATE TABLE period_elements (
        equipment_id text NOT NULL,
        period text NOT NULL,
        period_start timestamptz NOT NULL,
        period_end timestamptz NOT NULL,
        shift_id text,
        label text NOT NULL,
        {_element_columns()},
        covered_until timestamptz NOT NULL,
        version integer NOT NULL,
        PRIMARY KEY (equipment_id, period, period_start))""")
    op.execute(f"""CREATE TABLE period_versions (
        equipment_id text NOT NULL,
        period text NOT NULL,
        period_start timestamptz NOT NULL,
        version integer NOT NULL,
        known_at timestamptz NOT NULL,
        caused_by text NOT NULL,
        period_end timestamptz NOT NULL,
        shift_id text,
        {_element_columns()},
        covered_until timestamptz NOT NULL,
        PRIMARY KEY (equipment_id, period, period_start, version))""")

    # -- analyst views --------------------------------------------------------------------------
    # A repeated report of the same state (a new reason, a heartbeat) continues the interval it is in.
    op.execute("""CREATE VIEW equipment_timeline AS
        WITH changes AS (
            SELECT *, lag(state) OVER (PARTITION BY equipment_id ORDER BY occurred_at, event_id) AS previous_state
            FROM state_changes)
        SELECT equipment_id, state, reason_code, occurred_at AS started_at,
               lead(occurred_at) OVER (PARTITION BY equipment_id ORDER BY occurred_at, event_id) AS ended_at
        FROM changes WHERE previous_state IS DISTINCT FROM state""")
    op.execute("""CREATE VIEW downtime AS
        WITH timeline AS (
            SELECT t.*, extract(epoch FROM t.ended_at - t.started_at) AS duration_s FROM equipment_timeline t
            WHERE t.state <> 'RUNNING' AND t.state <> 'IDLE')
        SELECT t.equipment_id, t.state, t.started_at, t.ended_at, t.duration_s,
               t.reason_code AS reported_reason_code,
               coalesce(a.reason_code, t.reason_code) AS reason_code,
               a.reason_code IS NOT NULL AS reclassified,
               CASE t.state
                   WHEN 'DOWN' THEN CASE WHEN t.duration_s < 120 THEN 'minor_stop' ELSE 'unplanned_stop' END
                   WHEN 'SETUP' THEN 'setup' WHEN 'BLOCKED' THEN 'blocked' WHEN 'STARVED' THEN 'starved'
                   WHEN 'PLANNED_STOP' THEN 'planned' WHEN 'MAINTENANCE' THEN 'maintenance'
                   ELSE 'offline' END AS classification
        FROM timeline t
        LEFT JOIN LATERAL (
            SELECT reason_code FROM reason_assignments r
            WHERE r.equipment_id = t.equipment_id AND r.since = t.started_at
            ORDER BY r.occurred_at DESC, r.event_id DESC LIMIT 1) a ON true""")
    op.execute("""CREATE VIEW downtime_pareto AS
        SELECT equipment_id, coalesce(reason_code, '(none)') AS reason_code, classification,
               count(*) AS stops, sum(duration_s) AS duration_s
        FROM downtime WHERE ended_at IS NOT NULL
        GROUP BY 1, 2, 3""")
    op.execute("""CREATE VIEW orders AS
        SELECT o.order_id, o.product_id, o.quantity, o.due_at, o.status, o.started_at, o.completed_at,
               o.material_loaded,
               coalesce(sum(op.good) FILTER (WHERE op.operation = (p.routing -> -1 ->> 'operation')), 0) AS good,
               coalesce(sum(op.scrap) FILTER (WHERE op.operation = (p.routing -> -1 ->> 'operation')), 0) AS scrap
        FROM order_state o LEFT JOIN products p USING (product_id) LEFT JOIN operation_state op USING (order_id)
        GROUP BY o.order_id, p.routing""")
    # ISO 22400 fall-off ratio: scrap over produced quantity at the order's first operation.
    op.execute("""CREATE VIEW order_kpis AS
        SELECT o.order_id, o.product_id, o.status, o.started_at, o.completed_at,
               extract(epoch FROM o.completed_at - o.started_at) AS order_execution_s,
               first_op.operation AS first_operation,
               first_op.scrap::numeric / NULLIF(first_op.good + first_op.scrap, 0) AS fall_off_ratio
        FROM order_state o LEFT JOIN products p USING (product_id)
        LEFT JOIN LATERAL (
            SELECT p.routing -> 0 ->> 'operation' AS operation, sum(op.good) AS good, sum(op.scrap) AS scrap
            FROM operation_state op
            WHERE op.order_id = o.order_id AND op.operation = p.routing -> 0 ->> 'operation') first_op ON true""")
    op.execute("""CREATE VIEW wip AS
        SELECT op.order_id, op.operation, op.equipment_id, o.product_id, op.status,
               op.status = 'RUNNING' AS in_process, op.started_at, op.completed_at,
               op.good, op.scrap, op.rework, greatest(o.quantity - op.good, 0) AS remaining
        FROM operation_state op JOIN order_state o USING (order_id)""")
    op.execute("""CREATE VIEW hourly_counts AS
        SELECT equipment_id, period_start AS hour_start, gq AS good, sq AS reject, pq AS produced
        FROM period_elements WHERE period = 'hour'""")
    op.execute("""CREATE VIEW late_event_report AS
        SELECT equipment_id, event_type, count(*) AS events,
               max(extract(epoch FROM known_until - occurred_at)) AS worst_lateness_s
        FROM late_events GROUP BY 1, 2""")
    op.execute(f"""CREATE VIEW oee AS
        SELECT equipment_id, period, period_start, period_end, shift_id, label, version, covered_until,
        {_seconds()},
        {_ratios()}
        FROM period_elements""")
    op.execute(f"""CREATE VIEW oee_versions AS
        SELECT equipment_id, period, period_start, period_end, shift_id, version, known_at, caused_by, covered_until,
        {_seconds()},
        {_ratios()}
        FROM period_versions""")
    # search_path is pinned to this schema at creation, so analysts (and replays' scratch schemas) get
    # the versions of the schema the function belongs to, whatever their own search_path.
    op.execute("""CREATE FUNCTION oee_as_known_at(at timestamptz) RETURNS SETOF oee_versions
        LANGUAGE sql STABLE SET search_path FROM CURRENT AS $$
            SELECT DISTINCT ON (equipment_id, period, period_start) *
            FROM oee_versions WHERE known_at <= at
            ORDER BY equipment_id, period, period_start, version DESC
        $$""")
    sums = ",\n        ".join([f"sum(e.{e}_us) AS {e}_us" for e in ELEMENTS] + [f"sum(e.{c}) AS {c}" for c in COUNTS])
    op.execute(f"""CREATE VIEW oee_rollup_elements AS
        WITH RECURSIVE ancestry AS (
            SELECT equipment_id AS unit, equipment_id AS ancestor, level FROM equipment
            UNION ALL
            SELECT a.unit, p.equipment_id, p.level FROM ancestry a
            JOIN equipment c ON c.equipment_id = a.ancestor JOIN equipment p ON p.equipment_id = c.parent_id)
        SELECT a.ancestor AS equipment_id, a.level, e.period, e.period_start, max(e.period_end) AS period_end,
               e.shift_id, count(*) AS work_units,
        {sums}
        FROM period_elements e JOIN ancestry a ON a.unit = e.equipment_id
        WHERE a.ancestor <> e.equipment_id
        GROUP BY a.ancestor, a.level, e.period, e.period_start, e.shift_id""")
    op.execute(f"""CREATE VIEW oee_rollup AS
        SELECT equipment_id, level, period, period_start, period_end, shift_id, work_units,
        {_seconds()},
        {_ratios()}
        FROM oee_rollup_elements""")
    op.execute("""CREATE VIEW equipment_load AS
        SELECT e.equipment_id, e.period, e.period_start, e.pq, q.capacity_per_hour,
               e.pq::numeric / NULLIF(q.capacity_per_hour * extract(epoch FROM e.period_end - e.period_start) / 3600, 0)
                   AS equipment_load_ratio
        FROM period_elements e JOIN equipment q USING (equipment_id)""")
    grant_views_to_analysts(op, ["equipment_timeline", "downtime", "downtime_pareto", "orders", "order_kpis", "wip",
                                 "hourly_counts", "late_event_report", "oee", "oee_versions", "oee_rollup",
                                 "equipment_load"])
    op.execute("""DO $$ BEGIN
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'mom_analyst') THEN
            EXECUTE 'GRANT EXECUTE ON FUNCTION oee_as_known_at(timestamptz) TO mom_analyst';
        END IF;
    END $$""")
    # The cross-service kpi schema presents execution's KPIs, where the platform made one (not in replays).
    op.execute("""DO $$ BEGIN
        IF current_schema() = 'execution' AND EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'kpi')
           AND has_schema_privilege('kpi', 'CREATE') THEN
            CREATE OR REPLACE VIEW kpi.oee AS SELECT * FROM execution.oee;
            CREATE OR REPLACE VIEW kpi.oee_rollup AS SELECT * FROM execution.oee_rollup;
            CREATE OR REPLACE VIEW kpi.oee_versions AS SELECT * FROM execution.oee_versions;
            IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'mom_analyst') THEN
                GRANT SELECT ON kpi.oee, kpi.oee_rollup, kpi.oee_versions TO mom_analyst;
            END IF;
        END IF;
    END $$""")
