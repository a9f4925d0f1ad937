"""PostgreSQL access control against the real database, with every service schema migrated.

One writer role per service schema (`mom_<service>`), which writes its own schema and nothing else,
and `mom_analyst`, which reads the views granted to it and writes nothing. The roles connect as a
deployment's services do (their own LOGIN role); every refusal must be PostgreSQL's
`insufficient_privilege` (42501), so a missing table or a typo cannot pass for a refusal.
"""
from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import errors, sql

from services.common.localstack import ANALYST_ROLE, KPI_SCHEMA, SERVICE_SCHEMAS

pytestmark = pytest.mark.integration

# Views the README and docs/operations.md name for analysts: they must exist and be readable.
DOCUMENTED_VIEWS = ("kpi.oee", "kpi.oee_rollup", "execution.downtime_pareto", "execution.orders", "execution.wip",
                    "execution.equipment_state", "execution.hourly_counts")


@pytest.fixture(scope="module")
def catalog(prepared) -> dict:
    """Base tables per service schema, views per schema and their owners, and what mom_analyst may select."""
    with psycopg.connect(prepared.superuser_url, autocommit=True) as conn:
        tables = {schema: [r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY 1", (schema,))]
            for schema in SERVICE_SCHEMAS}
        views = conn.execute(
            """SELECT n.nspname, c.relname, pg_get_userbyid(c.relowner) FROM pg_class c
               JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE c.relkind IN ('v', 'm') AND n.nspname = ANY(%s) ORDER BY 1, 2""",
            ([*SERVICE_SCHEMAS, KPI_SCHEMA],)).fetchall()
        granted = conn.execute(
            """SELECT DISTINCT n.nspname, c.relname, c.relkind FROM pg_class c
               JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE has_table_privilege(%s, c.oid, 'SELECT') AND n.nspname = ANY(%s)""",
            (ANALYST_ROLE, [*SERVICE_SCHEMAS, KPI_SCHEMA])).fetchall()
    return {"tables": tables, "views": views, "granted": granted}


def _url(prepared, role: str) -> str:
    return prepared.config.db_url(role)


@pytest.fixture
def as_role(prepared) -> Iterator:
    opened: list[psycopg.Connection] = []

    def connect(role: str) -> psycopg.Connection:
        conn = psycopg.connect(_url(prepared, role), autocommit=False)
        opened.append(conn)
        return conn
    yield connect
    for conn in opened:
        conn.rollback()
        conn.close()


def _refused(conn: psycopg.Connection, statement: sql.Composable, *, view: bool = False) -> bool:
    """True when PostgreSQL refuses the statement for lack of privilege; anything else is a failure.

    A view that is not automatically updatable is refused as such before privileges are looked at:
    for views that counts too (nobody can write them), and the privilege is checked separately.
    """
    refusals: tuple[type[Exception], ...] = (errors.InsufficientPrivilege,)
    if view:
        refusals += (errors.ObjectNotInPrerequisiteState, errors.FeatureNotSupported)
    try:
        with conn.transaction():
            conn.execute(statement)
    except refusals:
        return True
    return False


def _qualified(schema: str, name: str) -> sql.Composable:
    return sql.Identifier(schema, name)


def test_every_service_schema_has_tables_to_protect(catalog: dict) -> None:
    assert catalog["tables"]["execution"], "execution's migrations made no tables"
    assert sum(len(t) for t in catalog["tables"].values()) >= 10


@pytest.mark.parametrize("service", SERVICE_SCHEMAS)
def test_writer_role_writes_its_own_schema_and_no_other(service: str, catalog: dict, as_role) -> None:
    conn = as_role(f"mom_{service}")
    own = f"probe_{uuid.uuid4().hex[:8]}"
    with conn.transaction(force_rollback=True):  # the positive control: the role may write its own schema
        conn.execute(sql.SQL("CREATE TABLE {} (x int)").format(_qualified(service, own)))
        conn.execute(sql.SQL("INSERT INTO {} VALUES (1)").format(_qualified(service, own)))
    refusals = []
    for other in SERVICE_SCHEMAS:
        if other == service:
            continue
        if not _refused(conn, sql.SQL("CREATE TABLE {} (x int)").format(_qualified(other, own))):
            refusals.append(f"CREATE TABLE in {other}")
        for table in catalog["tables"][other]:
            name = _qualified(other, table)
            for verb, statement in (
                ("INSERT", sql.SQL("INSERT INTO {} DEFAULT VALUES").format(name)),
                ("DELETE", sql.SQL("DELETE FROM {}").format(name)),
                ("TRUNCATE", sql.SQL("TRUNCATE {}").format(name)),
            ):
                if not _refused(conn, statement):
                    refusals.append(f"{verb} {other}.{table}")
    if not _refused(conn, sql.SQL("CREATE TABLE {} (x int)").format(_qualified("public", own))):
        refusals.append("CREATE TABLE in public")
    assert not refusals, f"mom_{service} was allowed: {refusals}"


@pytest.mark.parametrize("service", SERVICE_SCHEMAS)
def test_writer_role_cannot_replace_another_service_kpi_view(service: str, catalog: dict, as_role) -> None:
    conn = as_role(f"mom_{service}")
    foreign = [(schema, view) for schema, view, owner in catalog["views"]
               if schema == KPI_SCHEMA and owner != f"mom_{service}"]
    allowed = [f"{schema}.{view}" for schema, view in foreign
               if not _refused(conn, sql.SQL("DROP VIEW {}").format(_qualified(schema, view)))]
    assert not allowed, f"mom_{service} could drop {allowed}"


def test_analyst_reads_the_documented_views(catalog: dict, as_role) -> None:
    granted = {f"{schema}.{name}" for schema, name, _kind in catalog["granted"]}
    missing = [view for view in DOCUMENTED_VIEWS if view not in granted]
    assert not missing, f"not readable by {ANALYST_ROLE}: {missing}"
    conn = as_role(ANALYST_ROLE)
    for schema, name, _kind in catalog["granted"]:
        with conn.transaction():
            conn.execute(sql.SQL("SELECT * FROM {} LIMIT 1").format(_qualified(schema, name))).fetchall()


def test_analyst_is_granted_views_only_and_reads_no_table(catalog: dict, as_role) -> None:
    kinds = {f"{schema}.{name}": kind for schema, name, kind in catalog["granted"]}
    assert all(kind in ("v", "m") for kind in kinds.values()), {k: v for k, v in kinds.items() if v not in "vm"}
    conn = as_role(ANALYST_ROLE)
    readable = [f"{schema}.{table}" for schema, tables in catalog["tables"].items() for table in tables
                if not _refused(conn, sql.SQL("SELECT 1 FROM {} LIMIT 1").format(_qualified(schema, table)))]
    assert not readable, f"{ANALYST_ROLE} reads base tables: {readable}"


def test_analyst_writes_nothing(catalog: dict, as_role) -> None:
    conn = as_role(ANALYST_ROLE)
    allowed = []
    for schema, name, _kind in catalog["granted"]:
        target = _qualified(schema, name)
        for verb, statement in (("INSERT", sql.SQL("INSERT INTO {} DEFAULT VALUES").format(target)),
                                ("DELETE", sql.SQL("DELETE FROM {}").format(target))):
            if not _refused(conn, statement, view=True):
                allowed.append(f"{verb} {schema}.{name}")
        privileged = conn.execute("SELECT has_table_privilege(%s, %s, 'INSERT, UPDATE, DELETE, TRUNCATE')",
                                  (ANALYST_ROLE, f'"{schema}"."{name}"')).fetchone()[0]
        if privileged:
            allowed.append(f"a write privilege on {schema}.{name}")
    for schema, tables in catalog["tables"].items():
        for table in tables:
            if not _refused(conn, sql.SQL("DELETE FROM {}").format(_qualified(schema, table))):
                allowed.append(f"DELETE {schema}.{table}")
    for schema in (*SERVICE_SCHEMAS, KPI_SCHEMA, "public"):
        if not _refused(conn, sql.SQL("CREATE TABLE {} (x int)").format(_qualified(schema, "analyst_probe"))):
            allowed.append(f"CREATE TABLE in {schema}")
    assert not allowed, f"{ANALYST_ROLE} was allowed: {allowed}"


def test_the_plant_dashboard_queries_run_as_the_analyst(catalog: dict, as_role) -> None:
    """Every SQL query of deploy/grafana/dashboards/mom-plant.json, with Grafana's macros expanded."""
    import json
    import re
    from pathlib import Path

    dashboard = json.loads((Path(__file__).resolve().parents[2] / "deploy/grafana/dashboards/mom-plant.json").read_text())
    queries = [t["rawSql"] for p in dashboard["panels"] for t in p["targets"]]
    queries += [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    assert len(queries) >= 4
    conn = as_role(ANALYST_ROLE)
    for query in queries:
        expanded = re.sub(r"\$__timeFilter\((\w+(?:\.\w+)?)\)",
                          r"\1 BETWEEN '2026-01-01T00:00:00Z' AND '2026-12-31T00:00:00Z'", query)
        expanded = expanded.replace("${line:sqlstring}", "'acme.berlin.assembly.line1'")
        assert "$" not in expanded, expanded
        with conn.transaction():
            conn.execute(expanded).fetchall()
