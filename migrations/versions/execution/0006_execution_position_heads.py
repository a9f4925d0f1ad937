"""Each position carries the recorded_at of its partition's next record (see
services.common.migrations.add_position_heads).

Revision ID: execution_0006
Revises: execution_0005
"""
from services.common.migrations import add_position_heads as upgrade  # noqa: F401
from services.common.migrations import drop_position_heads as downgrade  # noqa: F401

revision = "execution_0006"
down_revision = "execution_0005"
branch_labels = None
depends_on = None
