"""Maintenance's tables: unit state, alarms, failures, work orders, plans and dues, operating time, views.

Durations are stored as exact microseconds (bigint); views present seconds. KPIs are computed in the
views from stored elements, so roll-ups over units and days are sums of elements.

Revision ID: maintenance_0001
Revises:
"""
from alembic import op

from services.common.db import PLUMBING_DDL
from services.common.migrations import grant_views_to_analysts

revision = "maintenance_0001"
down_revision = None
branch_labels = ("maintenance",)
depends_on = None


def upgrade() -> None:
    for ddl in PLUMBING_DDL:
        op.execute(ddl)
    op.execute("""CREATE TABLE unit_state (
        equipment_id text PRIMARY KEY,
        state text,
        accounted_until timestamptz,
        clock timestamptz,
        operating_us bigint NOT NULL,
        operating_at_restore bigint NOT NULL,
        stop_start timestamptz,
        stop_reason text,
        stop_alarm text,
        stop_ttf_us bigint,
        failure_id text)""")
    op.execute("""CREATE TABLE alarm_log (
        equipment_id text NOT NULL,
        alarm_code text NOT NULL,
        raised_at timestamptz NOT NULL,
        severity text NOT NULL,
        text text,
        raised_event_id text NOT NULL,
        cleared_at timestamptz,
        PRIMARY KEY (equipment_id, alarm_code, raised_at))""")
    op.execute("CREATE INDEX alarm_log_active ON alarm_log (equipment_id) WHERE cleared_at IS NULL")
    op.execute("""CREATE TABLE failure_log (
        failure_id text PRIMARY KEY,
        equipment_id text NOT NULL,
        started_at timestamptz NOT NULL,
        restored_at timestamptz,
        reason_code text,
        alarm_code text,
        ttf_us bigint NOT NULL,
        ttr_us bigint,
        work_order_id text NOT NULL,
        confirmed_at timestamptz NOT NULL)""")
    op.execute("CREATE INDEX failure_log_by_unit ON failure_log (equipment_id, started_at)")
    op.execute("""CREATE TABLE work_order_state (
        work_order_id text PRIMARY KEY,
        kind text NOT NULL,
        equipment_id text NOT NULL,
        status text NOT NULL,
        opened_at timestamptz NOT NULL,
        description text NOT NULL,
        failure_id text,
        plan_id text,
        due_index integer,
        alarm_code text,
        reason_code text,
        started_at timestamptz,
        completed_at timestamptz,
        technician_id text,
        locked_out boolean NOT NULL)""")
    op.execute("CREATE INDEX work_order_state_by_unit ON work_order_state (equipment_id, opened_at)")
    op.execute("""CREATE TABLE plans (
        plan_id text PRIMARY KEY,
        equipment_id text NOT NULL,
        task text NOT NULL,
        kind text NOT NULL,
        interval_s double precision,
        hours double precision,
        cycles bigint,
        defined_at timestamptz NOT NULL,
        revision integer NOT NULL,
        base_runtime_us bigint NOT NULL,
        base_cycles bigint NOT NULL,
        dues integer NOT NULL)""")
    op.execute("CREATE INDEX plans_by_unit ON plans (equipment_id)")
    op.execute("""CREATE TABLE pm_dues (
        plan_id text NOT NULL,
        revision integer NOT NULL,
        due_index integer NOT NULL,
        equipment_id text NOT NULL,
        trigger_kind text NOT NULL,
        due_at timestamptz,
        due_runtime_h double precision,
        due_cycles bigint,
        crossed_at timestamptz NOT NULL,
        work_order_id text NOT NULL,
        PRIMARY KEY (plan_id, revision, due_index))""")
    op.execute("""CREATE TABLE unit_runtime (
        equipment_id text PRIMARY KEY,
        through timestamptz NOT NULL,
        runtime_us bigint NOT NULL,
        cycles bigint NOT NULL)""")
    op.execute("""CREATE TABLE operating_time (
        equipment_id text NOT NULL,
        day date NOT NULL,
        operating_us bigint NOT NULL,
        PRIMARY KEY (equipment_id, day))""")
    op.execute("""CREATE TABLE condition_state (
        equipment_id text NOT NULL,
        parameter text NOT NULL,
        excursion_since timestamptz,
        direction text,
        worst_value double precision,
        work_order_id text,
        PRIMARY KEY (equipment_id, parameter))""")
    op.execute("""CREATE TABLE downtime_facts (
        equipment_id text NOT NULL,
        started_at timestamptz NOT NULL,
        state text NOT NULL,
        reason_at_start text,
        reason_at_end text,
        classification text,
        ended_at timestamptz,
        PRIMARY KEY (equipment_id, started_at))""")

    op.execute("""CREATE VIEW work_orders AS
        SELECT work_order_id, kind, equipment_id, status, opened_at, started_at, completed_at,
               ((extract(epoch FROM completed_at - started_at))::numeric(20, 6)) AS work_duration_s,
               description, failure_id, plan_id, due_index, alarm_code, reason_code, technician_id, locked_out
        FROM work_order_state""")
    op.execute("""CREATE VIEW failures AS
        SELECT f.failure_id, f.equipment_id, f.started_at, f.restored_at, (f.ttr_us / 1e6)::numeric(20, 6) AS ttr_s,
               (f.ttf_us / 1e6)::numeric(20, 6) AS ttf_s, f.reason_code, d.reason_at_end, f.alarm_code,
               d.classification AS execution_classification, f.work_order_id, w.status AS work_order_status,
               f.confirmed_at
        FROM failure_log f
        LEFT JOIN downtime_facts d ON d.equipment_id = f.equipment_id AND d.started_at = f.started_at
        LEFT JOIN work_order_state w ON w.work_order_id = f.work_order_id""")
    op.execute("""CREATE VIEW alarm_history AS
        SELECT equipment_id, alarm_code, severity, text, raised_at, cleared_at FROM alarm_log""")
    op.execute("""CREATE VIEW reliability AS
        WITH days AS (
            SELECT equipment_id, day FROM operating_time
            UNION SELECT equipment_id, (started_at AT TIME ZONE 'UTC')::date FROM failure_log
            UNION SELECT equipment_id, (completed_at AT TIME ZONE 'UTC')::date FROM work_order_state
                  WHERE completed_at IS NOT NULL AND started_at IS NOT NULL),
        elements AS (
            SELECT d.equipment_id, d.day,
                   coalesce(o.operating_us, 0) AS operating_us,
                   coalesce(f.failures, 0) AS failures, coalesce(f.restored, 0) AS restored,
                   coalesce(f.ttf_us, 0) AS ttf_us, coalesce(f.ttr_us, 0) AS ttr_us,
                   coalesce(w.cmt_us, 0) AS cmt_us, coalesce(w.pmt_us, 0) AS pmt_us
            FROM days d
            LEFT JOIN operating_time o ON o.equipment_id = d.equipment_id AND o.day = d.day
            LEFT JOIN LATERAL (
                SELECT count(*) AS failures, count(restored_at) AS restored, sum(ttf_us) AS ttf_us, sum(ttr_us) AS ttr_us
                FROM failure_log WHERE equipment_id = d.equipment_id AND (started_at AT TIME ZONE 'UTC')::date = d.day) f
                ON true
            LEFT JOIN LATERAL (
                SELECT sum(extract(epoch FROM completed_at - started_at) * 1e6)
                           FILTER (WHERE kind = 'corrective')::bigint AS cmt_us,
                       sum(extract(epoch FROM completed_at - started_at) * 1e6)
                           FILTER (WHERE kind <> 'corrective')::bigint AS pmt_us
                FROM work_order_state WHERE equipment_id = d.equipment_id AND started_at IS NOT NULL
                     AND (completed_at AT TIME ZONE 'UTC')::date = d.day) w ON true)
        SELECT equipment_id, 'day'::text AS period, (day::timestamp AT TIME ZONE 'UTC') AS period_start,
               ((day + 1)::timestamp AT TIME ZONE 'UTC') AS period_end,
               operating_us, failures, restored, ttf_us, ttr_us, cmt_us, pmt_us,
               (operating_us / 1e6)::numeric(20, 6) AS operating_s,
               (operating_us / 1e6 / NULLIF(failures, 0))::numeric(20, 6) AS mtbf_s,
               (ttf_us / 1e6 / NULLIF(failures, 0))::numeric(20, 6) AS mttf_s,
               (ttr_us / 1e6 / NULLIF(restored, 0))::numeric(20, 6) AS mttr_s,
               cmt_us::numeric / NULLIF(cmt_us + pmt_us, 0) AS cm_ratio
        FROM elements""")
    op.execute("""CREATE VIEW pm_schedule AS
        SELECT p.plan_id, p.equipment_id, p.task, p.kind AS trigger_kind, p.revision, p.defined_at, p.dues AS dues_so_far,
               (SELECT max(crossed_at) FROM pm_dues d WHERE d.plan_id = p.plan_id AND d.revision = p.revision)
                   AS last_due_at,
               p.interval_s, p.hours, p.cycles,
               CASE WHEN p.kind = 'calendar' THEN p.defined_at + (p.dues + 1) * p.interval_s * interval '1 second' END
                   AS next_due_at,
               CASE WHEN p.kind = 'runtime_hours'
                    THEN round(((coalesce(r.runtime_us, p.base_runtime_us) - p.base_runtime_us) / 3600e6)::numeric, 6) END
                   AS runtime_h_since_defined,
               CASE WHEN p.kind = 'runtime_hours' THEN round(((p.dues + 1) * p.hours)::numeric, 6) END
                   AS next_due_runtime_h,
               CASE WHEN p.kind = 'runtime_hours'
                    THEN round(((p.dues + 1) * p.hours
                                - (coalesce(r.runtime_us, p.base_runtime_us) - p.base_runtime_us) / 3600e6)::numeric, 6) END
                   AS runtime_h_remaining,
               CASE WHEN p.kind = 'cycles' THEN coalesce(r.cycles, p.base_cycles) - p.base_cycles END
                   AS cycles_since_defined,
               CASE WHEN p.kind = 'cycles' THEN (p.dues + 1) * p.cycles END AS next_due_cycles,
               CASE WHEN p.kind = 'cycles' THEN (p.dues + 1) * p.cycles - (coalesce(r.cycles, p.base_cycles) - p.base_cycles) END
                   AS cycles_remaining,
               u.clock AS unit_clock
        FROM plans p
        LEFT JOIN unit_runtime r ON r.equipment_id = p.equipment_id
        LEFT JOIN unit_state u ON u.equipment_id = p.equipment_id""")
    grant_views_to_analysts(op, ["work_orders", "failures", "alarm_history", "reliability", "pm_schedule"])
    # The cross-service kpi schema presents the reliability KPIs, where the platform made one (not in replays).
    op.execute("""DO $$ BEGIN
        IF current_schema() = 'maintenance' AND EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'kpi')
           AND has_schema_privilege('kpi', 'CREATE') THEN
            CREATE OR REPLACE VIEW kpi.reliability AS SELECT * FROM maintenance.reliability;
            IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'mom_analyst') THEN
                GRANT SELECT ON kpi.reliability TO mom_analyst;
            END IF;
        END IF;
    END $$""")
