"""Roll-ups that end on a cyclic equipment hierarchy.

`EquipmentRegistered` names a parent, and nothing stops a unit naming itself, or two pieces of
equipment naming each other. The ancestry walk of `oee_rollup_elements` used UNION ALL and so never
ended on such a cycle: every query of `oee_rollup` ran until cancelled. The walk now keeps each
(unit, ancestor) once (UNION), so it ends on any hierarchy, and a cycle's members roll up into one
another once each. The view's columns are unchanged.

Revision ID: execution_0004
Revises: execution_0003
"""
from alembic import op

revision = "execution_0004"
down_revision = "execution_0003"
branch_labels = None
depends_on = None

# the stored elements and counts of period_elements, as of this revision
ELEMENTS = ("pot", "pdot", "pbt", "apt", "asut", "adet", "adot", "aupt", "aubt", "aoet", "apat", "apwt",
            "out_of_shift", "data_gap", "ideal")
COUNTS = ("pq", "gq", "sq", "rq", "unrated")


def _rollup(union: str) -> str:
    sums = ",\n        ".join([f"sum(e.{e}_us) AS {e}_us" for e in ELEMENTS] + [f"sum(e.{c}) AS {c}" for c in COUNTS])
    return f"""CREATE OR REPLACE VIEW oee_rollup_elements AS
        WITH RECURSIVE ancestry AS (
            SELECT equipment_id AS unit, equipment_id AS ancestor, level FROM equipment
            {union}
            SELECT a.unit, p.equipment_id, p.level FROM ancestry a
            JOIN equipment c ON c.equipment_id = a.ancestor JOIN equipment p ON p.equipment_id = c.parent_id)
        SELECT a.ancestor AS equipment_id, a.level, e.period, e.period_start, max(e.period_end) AS period_end,
               e.shift_id, count(*) AS work_units,
        {sums}
        FROM period_elements e JOIN ancestry a ON a.unit = e.equipment_id
        WHERE a.ancestor <> e.equipment_id
        GROUP BY a.ancestor, a.level, e.period, e.period_start, e.shift_id"""


def upgrade() -> None:
    op.execute(_rollup("UNION"))


def downgrade() -> None:
    op.execute(_rollup("UNION ALL"))
