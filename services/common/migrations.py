"""Running each service's Alembic branch into its schema, and helpers its migrations share."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from alembic import command, op
from alembic.config import Config

from services.common.db import POSITION_HEADS_DDL, checked_schema
from services.common.settings import REPO_ROOT, sqlalchemy_url

MIGRATIONS_DIR = REPO_ROOT / "migrations"
ANALYST_ROLE = "mom_analyst"


def alembic_config(database_url: str, schema: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    versions = sorted(p for p in (MIGRATIONS_DIR / "versions").iterdir() if p.is_dir())
    config.set_main_option("version_locations", " ".join(str(p) for p in versions))
    config.set_main_option("path_separator", "space")
    config.attributes["schema"] = checked_schema(schema)
    config.attributes["url"] = sqlalchemy_url(database_url)
    return config


def upgrade(database_url: str, service: str, schema: str | None = None) -> None:
    """Bring a service's schema (by default named after the service) to its branch's head."""
    command.upgrade(alembic_config(database_url, schema or service), f"{service}@head")


def grant_views_to_analysts(op: Any, views: Sequence[str]) -> None:
    """Analysts read views and nothing else; where the role does not exist the grant is skipped."""
    names = ", ".join(f'"{v}"' for v in views)
    op.execute(f"""DO $$ BEGIN
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{ANALYST_ROLE}') THEN
            EXECUTE 'GRANT USAGE ON SCHEMA ' || quote_ident(current_schema()) || ' TO {ANALYST_ROLE}';
            EXECUTE 'GRANT SELECT ON {names.replace("'", "''")} TO {ANALYST_ROLE}';
        END IF;
    END $$""")


def add_position_heads() -> None:
    """Every service's positions carry the recorded_at of each partition's next record, so that the workers
    of one service fold in one acceptance order across the partitions they split (docs/architecture.md,
    "Several workers of one service"). The same migration in each service's branch."""
    op.execute(POSITION_HEADS_DDL)


def drop_position_heads() -> None:
    op.execute("ALTER TABLE positions DROP COLUMN head_recorded_at")
