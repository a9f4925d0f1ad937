"""The order a unit last ran is the one of its latest fact by event time, not the last one processed:
OrderStarted and ProductionReported are keyed by order, so two orders' events for one unit sit on
different partitions and a live worker may see them in another order than a replay.

Revision ID: inventory_0003
Revises: inventory_0002
"""
from alembic import op

revision = "inventory_0003"
down_revision = "inventory_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE unit_order ADD COLUMN since timestamptz, ADD COLUMN set_by text")


def downgrade() -> None:
    op.execute("ALTER TABLE unit_order DROP COLUMN since, DROP COLUMN set_by")
