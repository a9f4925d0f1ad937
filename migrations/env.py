"""Alembic environment: one branch per service schema, each with its version table inside that schema.

The target schema is a parameter (`config.attributes["schema"]`), so `mom replay` builds a scratch
schema with exactly the same migrations as the live one.
"""
from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool, text

config = context.config
schema = config.attributes["schema"]
url = config.attributes["url"]

engine = create_engine(url, poolclass=pool.NullPool, connect_args={"options": f"-c search_path={schema}"})
with engine.connect() as connection:
    # The platform creates service schemas (a writer role cannot create schemas); a scratch schema for
    # `mom replay` is created here by a role that may.
    exists = connection.execute(text("SELECT 1 FROM pg_namespace WHERE nspname = :s"), {"s": schema}).first()
    if not exists:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    connection.commit()  # end the implicit transaction, so Alembic's own commits the migrations
    context.configure(connection=connection, version_table_schema=schema, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
