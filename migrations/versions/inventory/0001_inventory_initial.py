"""Inventory's tables: lots and their stock per location, the movement ledger, genealogy edges,
materials with their reorder state, refusals; the analyst views, the as-of functions and kpi.inventory.

Revision ID: inventory_0001
Revises:
"""
from alembic import op

from services.common.db import PLUMBING_DDL
from services.common.migrations import grant_views_to_analysts

revision = "inventory_0001"
down_revision = None
branch_labels = ("inventory",)
depends_on = None

VIEWS = ["lots", "on_hand", "movements", "genealogy", "kpi_elements", "kpis", "refusals"]
FUNCTIONS = ["on_hand_at(timestamptz)", "trace(text, boolean, timestamptz)"]


def upgrade() -> None:
    for ddl in PLUMBING_DDL:
        op.execute(ddl)
    op.execute("""CREATE TABLE lot_state (
        lot_id text PRIMARY KEY,
        material_id text,
        unit text,
        status text NOT NULL,
        created_at timestamptz,
        origin text,
        order_id text,
        quantity double precision NOT NULL,
        produced_good bigint NOT NULL,
        produced_scrap bigint NOT NULL,
        nonconformance_id text,
        hold_reason text)""")
    op.execute("""CREATE INDEX lot_state_fifo ON lot_state (material_id, created_at, lot_id)
        WHERE status = 'AVAILABLE' AND quantity > 0""")
    op.execute("""CREATE TABLE stock (
        lot_id text NOT NULL,
        location_id text NOT NULL,
        quantity double precision NOT NULL,
        arrived_at timestamptz NOT NULL,
        PRIMARY KEY (lot_id, location_id))""")
    op.execute("""CREATE TABLE movement_ledger (
        event_id text NOT NULL,
        seq integer NOT NULL,
        lot_id text NOT NULL,
        material_id text NOT NULL,
        location_id text NOT NULL,
        kind text NOT NULL,
        quantity double precision NOT NULL,
        occurred_at timestamptz NOT NULL,
        recorded_at timestamptz NOT NULL,
        loss_kind text,
        order_id text,
        equipment_id text,
        produced_lot_id text,
        PRIMARY KEY (event_id, seq))""")
    op.execute("CREATE INDEX movement_ledger_by_material ON movement_ledger (material_id, occurred_at)")
    op.execute("CREATE INDEX movement_ledger_by_lot ON movement_ledger (lot_id, occurred_at)")
    op.execute("""CREATE TABLE genealogy_edges (
        parent_lot_id text NOT NULL,
        child_lot_id text NOT NULL,
        occurred_at timestamptz NOT NULL,
        quantity double precision NOT NULL,
        event_id text NOT NULL,
        seq integer NOT NULL,
        PRIMARY KEY (event_id, seq))""")
    # Both directions of the trace walk one index each; occurred_at in the key serves the as-of cut.
    op.execute("""CREATE INDEX genealogy_backward ON genealogy_edges (child_lot_id, occurred_at)
        INCLUDE (parent_lot_id, quantity)""")
    op.execute("""CREATE INDEX genealogy_forward ON genealogy_edges (parent_lot_id, occurred_at)
        INCLUDE (child_lot_id, quantity)""")
    op.execute("""CREATE TABLE material_state (
        material_id text PRIMARY KEY,
        unit text,
        available_quantity double precision NOT NULL,
        below_reorder boolean NOT NULL)""")
    op.execute("""CREATE TABLE order_loading (
        order_id text PRIMARY KEY,
        loaded_at timestamptz NOT NULL)""")
    op.execute("""CREATE TABLE unit_order (
        equipment_id text PRIMARY KEY,
        order_id text NOT NULL)""")
    op.execute("""CREATE TABLE refusal_log (
        event_id text PRIMARY KEY,
        caused_by text NOT NULL,
        attempted text NOT NULL,
        lot_id text,
        material_id text,
        quantity double precision NOT NULL,
        lot_status text,
        order_id text,
        equipment_id text,
        reason text NOT NULL,
        occurred_at timestamptz NOT NULL,
        recorded_at timestamptz NOT NULL)""")

    # -- analyst views ----------------------------------------------------------------------------------
    op.execute("""CREATE VIEW lots AS
        SELECT lot_id, material_id, unit, status, quantity, origin, order_id, created_at,
               produced_good, produced_scrap, nonconformance_id, hold_reason,
               (SELECT array_agg(location_id ORDER BY location_id) FROM stock s WHERE s.lot_id = l.lot_id) AS locations
        FROM lot_state l""")
    op.execute("""CREATE VIEW on_hand AS
        SELECT l.material_id, s.location_id, min(l.unit) AS unit, sum(s.quantity) AS quantity,
               coalesce(sum(s.quantity) FILTER (WHERE l.status = 'AVAILABLE'), 0) AS available,
               coalesce(sum(s.quantity) FILTER (WHERE l.status = 'HELD'), 0) AS held,
               count(DISTINCT l.lot_id) AS lots
        FROM stock s JOIN lot_state l USING (lot_id)
        GROUP BY l.material_id, s.location_id""")
    op.execute("""CREATE VIEW movements AS
        SELECT event_id, seq, occurred_at, recorded_at, lot_id, material_id, location_id, kind, quantity,
               loss_kind, order_id, equipment_id, produced_lot_id
        FROM movement_ledger""")
    op.execute("""CREATE VIEW genealogy AS
        SELECT e.parent_lot_id, p.material_id AS parent_material_id, e.child_lot_id,
               c.material_id AS child_material_id, sum(e.quantity) AS quantity,
               min(e.occurred_at) AS first_at, max(e.occurred_at) AS last_at, count(*) AS consumptions
        FROM genealogy_edges e
        LEFT JOIN lot_state p ON p.lot_id = e.parent_lot_id
        LEFT JOIN lot_state c ON c.lot_id = e.child_lot_id
        GROUP BY e.parent_lot_id, p.material_id, e.child_lot_id, c.material_id""")
    op.execute("""CREATE VIEW refusals AS
        SELECT occurred_at, recorded_at, attempted, lot_id, material_id, quantity, lot_status, order_id,
               equipment_id, reason, caused_by, event_id FROM refusal_log""")
    # On-hand as of an instant (event time): the ledger summed up to it.
    op.execute("""CREATE FUNCTION on_hand_at(at timestamptz)
        RETURNS TABLE (material_id text, location_id text, quantity double precision)
        LANGUAGE sql STABLE SET search_path FROM CURRENT AS $$
            SELECT m.material_id, m.location_id, sum(m.quantity)
            FROM movement_ledger m WHERE m.occurred_at <= at
            GROUP BY m.material_id, m.location_id HAVING abs(sum(m.quantity)) > 1e-9
        $$""")
    # The trace: every edge reachable from a lot, backward (ancestors) or forward (descendants), as of
    # an instant (NULL: now), each at the smallest depth it is reached; quantities summed per edge.
    # UNION (not UNION ALL) keeps a shared ancestor from multiplying the walk.
    op.execute("""CREATE FUNCTION trace(lot text, forward boolean DEFAULT false, as_of timestamptz DEFAULT NULL)
        RETURNS TABLE (lot_id text, material_id text, depth integer, parent_lot_id text, child_lot_id text,
                       quantity double precision)
        LANGUAGE plpgsql STABLE SET search_path FROM CURRENT AS $$
        #variable_conflict use_column
        BEGIN
            IF forward THEN
                RETURN QUERY
                WITH RECURSIVE walk(parent, child, depth) AS (
                    SELECT DISTINCT e.parent_lot_id, e.child_lot_id, 1 FROM genealogy_edges e
                    WHERE e.parent_lot_id = lot AND (as_of IS NULL OR e.occurred_at <= as_of)
                    UNION
                    SELECT e.parent_lot_id, e.child_lot_id, w.depth + 1 FROM walk w
                    JOIN genealogy_edges e ON e.parent_lot_id = w.child
                    WHERE (as_of IS NULL OR e.occurred_at <= as_of) AND w.depth < 1000)
                SELECT w.child, l.material_id, min(w.depth)::integer, w.parent, w.child,
                       (SELECT sum(e.quantity) FROM genealogy_edges e WHERE e.parent_lot_id = w.parent
                            AND e.child_lot_id = w.child AND (as_of IS NULL OR e.occurred_at <= as_of))
                FROM walk w LEFT JOIN lot_state l ON l.lot_id = w.child
                GROUP BY w.parent, w.child, l.material_id;
            ELSE
                RETURN QUERY
                WITH RECURSIVE walk(parent, child, depth) AS (
                    SELECT DISTINCT e.parent_lot_id, e.child_lot_id, 1 FROM genealogy_edges e
                    WHERE e.child_lot_id = lot AND (as_of IS NULL OR e.occurred_at <= as_of)
                    UNION
                    SELECT e.parent_lot_id, e.child_lot_id, w.depth + 1 FROM walk w
                    JOIN genealogy_edges e ON e.child_lot_id = w.parent
                    WHERE (as_of IS NULL OR e.occurred_at <= as_of) AND w.depth < 1000)
                SELECT w.parent, l.material_id, min(w.depth)::integer, w.parent, w.child,
                       (SELECT sum(e.quantity) FROM genealogy_edges e WHERE e.parent_lot_id = w.parent
                            AND e.child_lot_id = w.child AND (as_of IS NULL OR e.occurred_at <= as_of))
                FROM walk w LEFT JOIN lot_state l ON l.lot_id = w.parent
                GROUP BY w.parent, w.child, l.material_id;
            END IF;
        END $$""")
    # ISO 22400 inventory KPI elements per material and UTC day (project choice: UTC days, since
    # stock has no site clock). Average inventory is time-weighted over the day from the ledger.
    op.execute("""CREATE VIEW kpi_elements AS
        WITH days AS (
            SELECT DISTINCT material_id, date_trunc('day', occurred_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS day_start
            FROM movement_ledger),
        steps AS (
            SELECT material_id, occurred_at, sum(quantity) AS delta FROM movement_ledger GROUP BY 1, 2),
        balances AS (
            SELECT material_id, occurred_at AS since,
                   sum(delta) OVER (PARTITION BY material_id ORDER BY occurred_at) AS balance,
                   coalesce(lead(occurred_at) OVER (PARTITION BY material_id ORDER BY occurred_at), 'infinity') AS until
            FROM steps),
        averages AS (
            SELECT d.material_id, d.day_start,
                   coalesce(sum(b.balance * extract(epoch FROM least(b.until, d.day_start + interval '1 day')
                                                              - greatest(b.since, d.day_start))), 0) / 86400.0
                       AS average_inventory
            FROM days d LEFT JOIN balances b ON b.material_id = d.material_id
                 AND b.since < d.day_start + interval '1 day' AND b.until > d.day_start
            GROUP BY d.material_id, d.day_start),
        flows AS (
            SELECT m.material_id, date_trunc('day', m.occurred_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS day_start,
                   coalesce(sum(m.quantity) FILTER (WHERE m.kind = 'received'), 0) AS received,
                   coalesce(-sum(m.quantity) FILTER (WHERE m.kind = 'consumed'), 0) AS cm,
                   coalesce(sum(m.quantity) FILTER (WHERE m.kind = 'produced'), 0) AS gq,
                   coalesce(-sum(m.quantity * c.produced_good::numeric / NULLIF(c.produced_good + c.produced_scrap, 0))
                            FILTER (WHERE m.kind = 'consumed'), 0) AS igq,
                   coalesce(-sum(m.quantity) FILTER (WHERE m.kind = 'lost' AND m.loss_kind = 'production'), 0) AS pl,
                   coalesce(-sum(m.quantity) FILTER (WHERE m.kind = 'lost' AND m.loss_kind = 'storage_and_transport'), 0)
                       AS stl,
                   coalesce(-sum(m.quantity) FILTER (WHERE m.kind = 'lost' AND m.loss_kind = 'other'), 0) AS ol,
                   coalesce(-sum(m.quantity) FILTER (WHERE m.kind = 'scrapped'), 0) AS scrapped
            FROM movement_ledger m LEFT JOIN lot_state c ON c.lot_id = m.produced_lot_id
            GROUP BY 1, 2)
        SELECT f.material_id, f.day_start, f.day_start + interval '1 day' AS day_end,
               f.received, f.cm AS throughput, a.average_inventory, f.cm, f.gq, f.igq, f.pl, f.stl, f.ol, f.scrapped
        FROM flows f JOIN averages a USING (material_id, day_start)""")
    op.execute("""CREATE VIEW kpis AS
        WITH scoped AS (
            SELECT material_id, day_start, day_end, received, throughput, average_inventory, cm, gq, igq, pl, stl, ol,
                   scrapped FROM kpi_elements
            UNION ALL
            SELECT NULL, day_start, day_end, sum(received), sum(throughput), sum(average_inventory), sum(cm), sum(gq),
                   sum(igq), sum(pl), sum(stl), sum(ol), sum(scrapped)
            FROM kpi_elements GROUP BY day_start, day_end)
        SELECT material_id, day_start, day_end, received, throughput, average_inventory, cm, gq, igq, pl, stl, ol,
               scrapped,
               throughput::numeric / NULLIF(average_inventory, 0)::numeric AS inventory_turns,
               gq::numeric / NULLIF(cm, 0)::numeric AS finished_goods_ratio,
               igq::numeric / NULLIF(cm, 0)::numeric AS integrated_goods_ratio,
               pl::numeric / NULLIF(cm, 0)::numeric AS production_loss_ratio,
               stl::numeric / NULLIF(cm, 0)::numeric AS storage_and_transportation_loss_ratio,
               ol::numeric / NULLIF(cm, 0)::numeric AS other_loss_ratio
        FROM scoped""")
    grant_views_to_analysts(op, VIEWS)
    op.execute(f"""DO $$ BEGIN
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'mom_analyst') THEN
            EXECUTE 'GRANT EXECUTE ON FUNCTION {", ".join(FUNCTIONS)} TO mom_analyst';
        END IF;
    END $$""")
    # The cross-service kpi schema presents inventory's KPIs, where the platform made one (not in replays).
    op.execute("""DO $$ BEGIN
        IF current_schema() = 'inventory' AND EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'kpi')
           AND has_schema_privilege('kpi', 'CREATE') THEN
            CREATE OR REPLACE VIEW kpi.inventory AS SELECT * FROM inventory.kpis;
            IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'mom_analyst') THEN
                GRANT SELECT ON kpi.inventory TO mom_analyst;
            END IF;
        END IF;
    END $$""")
