"""The events that locked and released each lockout, so that a lockout recorded after a period closed
revises it: the version it makes names its cause.

Revision ID: execution_0008
Revises: execution_0007
"""
from alembic import op

revision = "execution_0008"
down_revision = "execution_0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE lockouts ADD COLUMN locked_event_id text, ADD COLUMN released_event_id text")


def downgrade() -> None:
    op.execute("ALTER TABLE lockouts DROP COLUMN locked_event_id, DROP COLUMN released_event_id")
