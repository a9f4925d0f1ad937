"""Each position carries the recorded_at of its partition's next record (see
services.common.migrations.add_position_heads).

Revision ID: quality_0002
Revises: quality_0001
"""
from services.common.migrations import add_position_heads as upgrade  # noqa: F401
from services.common.migrations import drop_position_heads as downgrade  # noqa: F401

revision = "quality_0002"
down_revision = "quality_0001"
branch_labels = None
depends_on = None
