"""Each position carries the recorded_at of its partition's next record (see
services.common.migrations.add_position_heads).

Revision ID: inventory_0004
Revises: inventory_0003
"""
from services.common.migrations import add_position_heads as upgrade  # noqa: F401
from services.common.migrations import drop_position_heads as downgrade  # noqa: F401

revision = "inventory_0004"
down_revision = "inventory_0003"
branch_labels = None
depends_on = None
