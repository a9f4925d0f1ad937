"""Quality's tables and analyst views: plans, sampling, SPC charts with versioned limits, capability,
nonconformances, holds and yield facts.

SPC points are stored once per limits version (spc_point_rows) over the inspection that made them, so
a change of limits adds a version of the history without rewriting the points already evaluated.

Revision ID: quality_0001
Revises:
"""
from alembic import op

from services.common.db import PLUMBING_DDL
from services.common.migrations import grant_views_to_analysts

revision = "quality_0001"
down_revision = None
branch_labels = ("quality",)
depends_on = None

RULE_LIST = "ARRAY(SELECT r FROM generate_series(1, 8) AS r WHERE ({mask} & (1 << (r - 1))) <> 0)"


def upgrade() -> None:
    for ddl in PLUMBING_DDL:
        op.execute(ddl)
    op.execute("""CREATE TABLE plans (
        plan_id text PRIMARY KEY,
        product_id text NOT NULL,
        operation text NOT NULL,
        occurred_at timestamptz NOT NULL)""")
    op.execute("CREATE INDEX plans_by_product ON plans (product_id)")
    op.execute("""CREATE TABLE characteristics (
        plan_id text NOT NULL,
        characteristic_id text NOT NULL,
        name text NOT NULL,
        kind text NOT NULL,
        lsl double precision,
        usl double precision,
        target double precision,
        sigma double precision,
        unit text,
        sample_size bigint NOT NULL,
        every_n_parts bigint NOT NULL,
        sampling text,
        PRIMARY KEY (plan_id, characteristic_id))""")
    op.execute("""CREATE TABLE order_products (
        order_id text PRIMARY KEY,
        product_id text NOT NULL)""")
    op.execute("""CREATE TABLE order_progress (
        order_id text NOT NULL,
        operation text NOT NULL,
        parts bigint NOT NULL,
        lots text[] NOT NULL,
        PRIMARY KEY (order_id, operation))""")
    op.execute("""CREATE TABLE inspection_dues (
        due_id text PRIMARY KEY,
        plan_id text NOT NULL,
        characteristic_id text NOT NULL,
        product_id text NOT NULL,
        operation text NOT NULL,
        order_id text NOT NULL,
        lot_id text,
        equipment_id text,
        reason text NOT NULL,
        parts_produced bigint NOT NULL,
        sample_size bigint NOT NULL,
        due_at timestamptz NOT NULL,
        recorded_at timestamptz NOT NULL,
        caused_by text NOT NULL)""")
    op.execute("CREATE INDEX inspection_dues_by_order ON inspection_dues (plan_id, characteristic_id, order_id)")
    op.execute("""CREATE TABLE inspection_results (
        event_id text PRIMARY KEY,
        plan_id text NOT NULL,
        characteristic_id text NOT NULL,
        equipment_id text,
        order_id text,
        lot_id text,
        product_id text,
        occurred_at timestamptz NOT NULL,
        recorded_at timestamptz NOT NULL,
        kind text NOT NULL,
        sample_values double precision[],
        mean double precision,
        range double precision,
        passed boolean,
        values_outside integer NOT NULL,
        inspected integer NOT NULL,
        good integer NOT NULL,
        first_pass boolean NOT NULL,
        nonconformance_id text,
        point bigint)""")
    op.execute("CREATE INDEX inspection_results_by_order ON inspection_results (plan_id, characteristic_id, order_id)")
    op.execute("CREATE INDEX inspection_results_by_time ON inspection_results (occurred_at)")
    # an inspection with values is one point (a subgroup) of its characteristic's chart
    op.execute("""CREATE UNIQUE INDEX inspection_results_by_point ON inspection_results (plan_id, characteristic_id, point)
                  WHERE point IS NOT NULL""")
    op.execute("""CREATE TABLE charts (
        plan_id text NOT NULL,
        characteristic_id text NOT NULL,
        subgroup_size integer NOT NULL,
        points bigint NOT NULL,
        version integer NOT NULL,
        versions integer NOT NULL,
        tail double precision[] NOT NULL,
        holding integer NOT NULL,
        range_holding boolean NOT NULL,
        last_value double precision,
        PRIMARY KEY (plan_id, characteristic_id))""")
    op.execute("""CREATE TABLE control_limits (
        plan_id text NOT NULL,
        characteristic_id text NOT NULL,
        version integer NOT NULL,
        source text NOT NULL,
        subgroup_size integer NOT NULL,
        centre double precision NOT NULL,
        sigma double precision NOT NULL,
        ucl double precision NOT NULL,
        lcl double precision NOT NULL,
        range_centre double precision NOT NULL,
        range_ucl double precision NOT NULL,
        range_lcl double precision NOT NULL,
        within_sigma double precision NOT NULL,
        baseline_subgroups integer NOT NULL,
        target double precision,
        plan_sigma double precision,
        defined_at timestamptz NOT NULL,
        caused_by text NOT NULL,
        PRIMARY KEY (plan_id, characteristic_id, version))""")
    op.execute("""CREATE TABLE spc_point_rows (
        plan_id text NOT NULL,
        characteristic_id text NOT NULL,
        point bigint NOT NULL,
        version integer NOT NULL,
        rules_holding integer NOT NULL,
        rules_fired integer NOT NULL,
        range_beyond boolean NOT NULL,
        PRIMARY KEY (plan_id, characteristic_id, point, version))""")
    op.execute("""CREATE TABLE capability_stats (
        plan_id text NOT NULL,
        characteristic_id text NOT NULL,
        period text NOT NULL,
        period_start timestamptz NOT NULL,
        subgroup_size integer NOT NULL,
        n_values bigint NOT NULL,
        mean double precision NOT NULL,
        m2 double precision NOT NULL,
        subgroups bigint NOT NULL,
        range_sum double precision NOT NULL,
        ranges bigint NOT NULL,
        machine_values bigint NOT NULL,
        machine_mean double precision NOT NULL,
        machine_m2 double precision NOT NULL,
        lsl double precision,
        usl double precision,
        sigma_within double precision,
        sigma_overall double precision,
        sigma_machine double precision,
        cp double precision,
        cpk double precision,
        pp double precision,
        ppk double precision,
        cm double precision,
        cmk double precision,
        PRIMARY KEY (plan_id, characteristic_id, period, period_start))""")
    op.execute("""CREATE TABLE nonconformance_rows (
        nonconformance_id text PRIMARY KEY,
        plan_id text NOT NULL,
        characteristic_id text NOT NULL,
        lot_id text,
        equipment_id text,
        order_id text,
        reason text NOT NULL,
        values_outside integer NOT NULL,
        opened_at timestamptz NOT NULL,
        caused_by text NOT NULL,
        closed_at timestamptz,
        disposition text,
        closed_by text)""")
    op.execute("""CREATE TABLE lots (
        lot_id text PRIMARY KEY,
        status text NOT NULL,
        open_nonconformances text[] NOT NULL,
        holds integer NOT NULL,
        reworked boolean NOT NULL)""")
    op.execute("""CREATE TABLE hold_rows (
        lot_id text NOT NULL,
        hold_no integer NOT NULL,
        held_at timestamptz NOT NULL,
        nonconformance_id text NOT NULL,
        equipment_id text,
        order_id text,
        caused_by text NOT NULL,
        ended_at timestamptz,
        outcome text,
        ended_by text,
        PRIMARY KEY (lot_id, hold_no))""")
    op.execute("""CREATE TABLE production_facts (
        event_id text PRIMARY KEY,
        equipment_id text NOT NULL,
        order_id text,
        product_id text,
        occurred_at timestamptz NOT NULL,
        produced bigint NOT NULL,
        scrap bigint NOT NULL,
        rework bigint NOT NULL)""")
    op.execute("""CREATE TABLE refusals (
        event_id text PRIMARY KEY,
        event_type text NOT NULL,
        subject_id text NOT NULL,
        reason text NOT NULL,
        occurred_at timestamptz NOT NULL,
        recorded_at timestamptz NOT NULL)""")

    # -- analyst views --
    op.execute("""CREATE VIEW inspections AS
        SELECT r.event_id, r.plan_id, r.characteristic_id, c.name AS characteristic_name, r.product_id, r.equipment_id,
               r.order_id, r.lot_id, r.occurred_at, r.recorded_at, r.kind, r.sample_values, r.mean, r.range, r.passed,
               c.lsl, c.usl, c.unit, r.values_outside, r.inspected, r.good, r.first_pass,
               r.values_outside = 0 AND r.passed IS DISTINCT FROM false AS conforming, r.nonconformance_id
        FROM inspection_results r LEFT JOIN characteristics c USING (plan_id, characteristic_id)""")
    # The k-th sample due for a characteristic and an order is taken by the k-th inspection of them, in
    # event time; one not taken is overdue once the next one is due, or an hour after it came due.
    op.execute("""CREATE VIEW inspections_due AS
        WITH d AS (
            SELECT *, row_number() OVER w AS k, lead(due_at) OVER w AS next_due_at
            FROM inspection_dues WINDOW w AS (PARTITION BY plan_id, characteristic_id, order_id ORDER BY due_at, due_id)),
        i AS (
            SELECT plan_id, characteristic_id, order_id, event_id, occurred_at,
                   row_number() OVER (PARTITION BY plan_id, characteristic_id, order_id ORDER BY occurred_at, event_id) AS k
            FROM inspection_results WHERE order_id IS NOT NULL)
        SELECT d.due_id, d.plan_id, d.characteristic_id, d.product_id, d.operation, d.order_id, d.lot_id, d.equipment_id,
               d.reason, d.parts_produced, d.sample_size, d.due_at, d.next_due_at,
               i.event_id AS inspected_by, i.occurred_at AS inspected_at,
               i.event_id IS NULL AND (d.next_due_at IS NOT NULL OR d.due_at < now() - interval '1 hour') AS overdue
        FROM d LEFT JOIN i ON i.plan_id = d.plan_id AND i.characteristic_id = d.characteristic_id
                          AND i.order_id = d.order_id AND i.k = d.k""")
    op.execute("CREATE VIEW overdue_inspections AS SELECT * FROM inspections_due WHERE overdue")
    op.execute(f"""CREATE VIEW spc_points AS
        SELECT p.plan_id, p.characteristic_id, p.point, p.version AS limits_version,
               p.version = c.version AS current_version, g.event_id, g.occurred_at, g.equipment_id, g.order_id, g.lot_id,
               c.subgroup_size, CASE WHEN c.subgroup_size = 1 THEN 'I' ELSE 'XBAR' END AS chart,
               g.sample_values, g.mean AS value, g.range AS range_value,
               l.centre, l.sigma, l.ucl, l.lcl, l.centre + 2 * l.sigma AS upper_2_sigma, l.centre - 2 * l.sigma AS lower_2_sigma,
               l.centre + l.sigma AS upper_1_sigma, l.centre - l.sigma AS lower_1_sigma,
               l.range_centre, l.range_ucl, l.range_lcl, l.source AS limits_source,
               {RULE_LIST.format(mask="p.rules_holding")} AS rules,
               {RULE_LIST.format(mask="p.rules_fired")} AS rules_fired,
               p.range_beyond
        FROM spc_point_rows p
        JOIN inspection_results g USING (plan_id, characteristic_id, point)
        JOIN charts c USING (plan_id, characteristic_id)
        LEFT JOIN control_limits l ON l.plan_id = p.plan_id AND l.characteristic_id = p.characteristic_id
                                   AND l.version = p.version""")
    op.execute("""CREATE VIEW control_limit_versions AS
        SELECT l.*, l.version = c.version AS current_version
        FROM control_limits l JOIN charts c USING (plan_id, characteristic_id)""")
    op.execute("""CREATE VIEW capability AS
        SELECT s.plan_id, s.characteristic_id, c.name AS characteristic_name, p.product_id, s.period, s.period_start,
               s.subgroup_size, s.n_values, s.subgroups, s.mean, s.lsl, s.usl, c.target,
               s.sigma_within, s.sigma_overall, s.machine_values, s.machine_mean, s.sigma_machine,
               s.cp, s.cpk, s.pp, s.ppk, s.cm, s.cmk
        FROM capability_stats s LEFT JOIN characteristics c USING (plan_id, characteristic_id)
        LEFT JOIN plans p USING (plan_id)""")
    op.execute("""CREATE VIEW nonconformances AS
        SELECT n.nonconformance_id, n.plan_id, n.characteristic_id, n.lot_id, n.equipment_id, n.order_id, n.reason,
               n.values_outside, n.opened_at, n.caused_by,
               CASE WHEN n.closed_at IS NULL THEN 'OPEN' ELSE 'CLOSED' END AS status,
               n.closed_at, n.disposition, n.closed_by, n.closed_at - n.opened_at AS time_to_close
        FROM nonconformance_rows n""")
    op.execute("""CREATE VIEW holds AS
        SELECT h.lot_id, h.hold_no, h.held_at, h.nonconformance_id, h.equipment_id, h.order_id, h.caused_by,
               h.ended_at IS NULL AS active, h.ended_at, h.outcome, h.ended_by, l.status AS lot_status,
               l.open_nonconformances
        FROM hold_rows h JOIN lots l USING (lot_id)""")
    op.execute("""CREATE VIEW fpy_elements AS
        WITH facts AS (
            SELECT equipment_id, product_id, occurred_at, inspected::bigint AS ip, good::bigint AS gp,
                   0::bigint AS pq, 0::bigint AS sq, 0::bigint AS rq
            FROM inspection_results WHERE first_pass
            UNION ALL
            SELECT f.equipment_id, coalesce(f.product_id, o.product_id), f.occurred_at, 0, 0, f.produced, f.scrap, f.rework
            FROM production_facts f LEFT JOIN order_products o USING (order_id))
        SELECT equipment_id, product_id, k.period,
               date_trunc(k.period, occurred_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS period_start,
               sum(ip) AS ip, sum(gp) AS gp, sum(pq) AS pq, sum(sq) AS sq, sum(rq) AS rq
        FROM facts CROSS JOIN (VALUES ('hour'), ('day')) AS k(period)
        GROUP BY 1, 2, 3, 4""")
    op.execute("""CREATE VIEW fpy AS
        SELECT equipment_id, product_id, period, period_start,
               period_start + CASE period WHEN 'hour' THEN interval '1 hour' ELSE interval '1 day' END AS period_end,
               ip, gp, pq, sq, rq,
               gp::numeric / NULLIF(ip, 0) AS first_pass_yield,
               sq::numeric / NULLIF(pq, 0) AS scrap_ratio,
               rq::numeric / NULLIF(pq, 0) AS rework_ratio
        FROM fpy_elements""")
    op.execute("""CREATE VIEW refused_inputs AS SELECT * FROM refusals""")
    grant_views_to_analysts(op, ["inspections", "inspections_due", "overdue_inspections", "spc_points",
                                 "control_limit_versions", "capability", "nonconformances", "holds", "fpy_elements",
                                 "fpy", "refused_inputs"])
    # The cross-service kpi schema presents quality's KPIs, where the platform made one (not in replays).
    op.execute("""DO $$ BEGIN
        IF current_schema() = 'quality' AND EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'kpi')
           AND has_schema_privilege('kpi', 'CREATE') THEN
            CREATE OR REPLACE VIEW kpi.quality AS SELECT * FROM quality.fpy;
            CREATE OR REPLACE VIEW kpi.capability AS SELECT * FROM quality.capability;
            IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'mom_analyst') THEN
                GRANT SELECT ON kpi.quality, kpi.capability TO mom_analyst;
            END IF;
        END IF;
    END $$""")

