"""Each position carries the recorded_at of its partition's next record (see
services.common.migrations.add_position_heads).

Revision ID: maintenance_0003
Revises: maintenance_0002
"""
from services.common.migrations import add_position_heads as upgrade  # noqa: F401
from services.common.migrations import drop_position_heads as downgrade  # noqa: F401

revision = "maintenance_0003"
down_revision = "maintenance_0002"
branch_labels = None
depends_on = None
