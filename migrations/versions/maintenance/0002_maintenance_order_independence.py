"""Maintenance: the runtime facts a plan's base is read from, and work reports kept for orders not yet open.

Both make the tables independent of how the service's input topics interleave: a plan folded after
the hours that follow its definition finds them here, and a report folded before the event that
opens its order applies when the order opens.

Revision ID: maintenance_0002
Revises: maintenance_0001
"""
from alembic import op

revision = "maintenance_0002"
down_revision = "maintenance_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""CREATE TABLE runtime_facts (
        equipment_id text NOT NULL,
        period_end timestamptz NOT NULL,
        runtime_us bigint NOT NULL,
        cycles bigint NOT NULL,
        PRIMARY KEY (equipment_id, period_end))""")
    op.execute("""CREATE TABLE pending_work_reports (
        event_id text PRIMARY KEY,
        work_order_id text NOT NULL,
        status text NOT NULL,
        technician_id text,
        occurred_at timestamptz NOT NULL,
        recorded_at timestamptz NOT NULL,
        source text NOT NULL,
        correlation_id text)""")
    op.execute("CREATE INDEX pending_work_reports_by_order ON pending_work_reports (work_order_id)")
