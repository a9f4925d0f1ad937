"""Each unit's latest recorded_at over its stored state changes and production reports.

An hour that closes in a batch has version 1 as known when the first fact past its end was
recorded. When no fact that bears on the hour was recorded after that one, version 1 is the figures
just computed, and nothing needs reading again. This column tells, without a scan, that none of
the unit's stored machine facts was recorded later.

Revision ID: execution_0005
Revises: execution_0004
"""
from alembic import op

revision = "execution_0005"
down_revision = "execution_0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE unit_clock ADD COLUMN recorded_until timestamptz")
    op.execute("""UPDATE unit_clock c SET recorded_until = greatest(
                      (SELECT max(recorded_at) FROM state_changes s WHERE s.equipment_id = c.equipment_id),
                      (SELECT max(recorded_at) FROM production p WHERE p.equipment_id = c.equipment_id))""")


def downgrade() -> None:
    op.execute("ALTER TABLE unit_clock DROP COLUMN recorded_until")
