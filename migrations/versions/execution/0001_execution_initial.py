"""Execution's first tables: plumbing, equipment status, hourly part counts, and their analyst views.

Revision ID: execution_0001
Revises:
"""
from alembic import op

from services.common.db import PLUMBING_DDL
from services.common.migrations import grant_views_to_analysts

revision = "execution_0001"
down_revision = None
branch_labels = ("execution",)
depends_on = None


def upgrade() -> None:
    for ddl in PLUMBING_DDL:
        op.execute(ddl)
    op.execute("""CREATE TABLE equipment_status (
        equipment_id text PRIMARY KEY,
        state text NOT NULL,
        reason_code text,
        since timestamptz NOT NULL,
        last_event_id text NOT NULL)""")
    op.execute("""CREATE TABLE part_counts_hourly (
        equipment_id text NOT NULL,
        hour_start timestamptz NOT NULL,
        good bigint NOT NULL,
        reject bigint NOT NULL,
        PRIMARY KEY (equipment_id, hour_start))""")
    op.execute("""CREATE VIEW equipment_state AS
        SELECT equipment_id, state, reason_code, since FROM equipment_status""")
    op.execute("""CREATE VIEW hourly_counts AS
        SELECT equipment_id, hour_start, good, reject, good + reject AS produced FROM part_counts_hourly""")
    grant_views_to_analysts(op, ["equipment_state", "hourly_counts"])
