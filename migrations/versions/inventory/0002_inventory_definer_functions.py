"""The analyst's as-of functions read inventory's tables, which analysts may not select: run them with
the owner's rights (their search_path is pinned to the schema, so they cannot be redirected).

Revision ID: inventory_0002
Revises: inventory_0001
"""
from alembic import op

revision = "inventory_0002"
down_revision = "inventory_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER FUNCTION on_hand_at(timestamptz) SECURITY DEFINER")
    op.execute("ALTER FUNCTION trace(text, boolean, timestamptz) SECURITY DEFINER")
