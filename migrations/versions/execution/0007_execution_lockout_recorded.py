"""When a lockout's lock and its release were each recorded.

A period as known at a time T counts a lockout only if its lock was recorded by T, and its end only if
its release was. The row kept one recorded_at, the later of the two, so a lockout whose lock was
recorded after T still counted from its start. Rows from before this migration get their recorded_at
for both: their versions already stored are kept, and only a replay computes them anew.

Revision ID: execution_0007
Revises: execution_0006
"""
from alembic import op

revision = "execution_0007"
down_revision = "execution_0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE lockouts ADD COLUMN locked_recorded_at timestamptz, ADD COLUMN released_recorded_at timestamptz")
    op.execute("""UPDATE lockouts SET locked_recorded_at = CASE WHEN locked_at IS NOT NULL THEN recorded_at END,
                                      released_recorded_at = CASE WHEN released_at IS NOT NULL THEN recorded_at END""")


def downgrade() -> None:
    op.execute("ALTER TABLE lockouts DROP COLUMN locked_recorded_at, DROP COLUMN released_recorded_at")
