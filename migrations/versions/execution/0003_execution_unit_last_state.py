"""Each unit's latest machine state change by (event time, event id), kept beside its clock.

A batch whose facts all lie at or after the unit's clock extends the open periods from the clock on;
the state in effect at the clock is this one, so the batch needs no read of stored state changes.

Revision ID: execution_0003
Revises: execution_0002
"""
from alembic import op

revision = "execution_0003"
down_revision = "execution_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""ALTER TABLE unit_clock ADD COLUMN last_state_at timestamptz,
                                         ADD COLUMN last_state_event_id text,
                                         ADD COLUMN last_state text""")
    op.execute("""UPDATE unit_clock c SET last_state_at = s.occurred_at, last_state_event_id = s.event_id,
                                          last_state = s.state
                  FROM (SELECT DISTINCT ON (equipment_id) equipment_id, occurred_at, event_id, state
                        FROM state_changes ORDER BY equipment_id, occurred_at DESC, event_id DESC) s
                  WHERE s.equipment_id = c.equipment_id""")
    # two state changes at a unit's latest instant: their order would be the collation's; say so
    op.execute("""UPDATE unit_clock c SET last_state_event_id = NULL, last_state = NULL
                  WHERE (SELECT count(*) FROM state_changes s
                         WHERE s.equipment_id = c.equipment_id AND s.occurred_at = c.last_state_at) > 1""")


def downgrade() -> None:
    op.execute("ALTER TABLE unit_clock DROP COLUMN last_state_at, DROP COLUMN last_state_event_id, DROP COLUMN last_state")
