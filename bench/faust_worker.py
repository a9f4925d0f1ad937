"""The naive baseline: a faust agent doing one SQLAlchemy ORM upsert per event.

Run as a subprocess by the bench (`python -m bench.faust_worker worker ...`), with MOM_BENCH_BOOTSTRAP,
MOM_BENCH_APP_ID, MOM_BENCH_TOPIC (a topic holding only this run's events), MOM_DATABASE_URL and
MOM_DB_SCHEMA in its environment. One agent reads the topic event by event (faust's own per-event
stream, the aiokafka driver, faust committing offsets), decodes each value with the project's codec and,
in one transaction per event, upserts the row of the event's key through the ORM: events seen, the last
event id and type. That is far less domain work than any service does per event; what it shows is the
cost of the per-event transaction path the services avoid by folding batches.
"""
from __future__ import annotations

import logging
import os
import sys
import traceback

import faust
from sqlalchemy import BigInteger, Text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.common.avro import codec_for
from services.common.catalogue import Catalogue
from services.common.db import make_engine
from services.common.settings import REPO_ROOT


class Base(DeclarativeBase):
    pass


class NaiveRow(Base):
    __tablename__ = "naive_rows"
    key: Mapped[str] = mapped_column(Text, primary_key=True)
    events: Mapped[int] = mapped_column(BigInteger)
    last_event_id: Mapped[str] = mapped_column(Text)
    last_type: Mapped[str] = mapped_column(Text)


DDL = "CREATE TABLE {schema}.naive_rows (key text PRIMARY KEY, events bigint NOT NULL, last_event_id text NOT NULL, last_type text NOT NULL)"
PROGRESS = "SELECT coalesce(sum(events), 0) FROM {schema}.naive_rows"

if __name__ == "__main__":
    catalogue = Catalogue.load()
    codec = codec_for(catalogue, "", REPO_ROOT / "schemas")
    app = faust.App(
        os.environ["MOM_BENCH_APP_ID"],
        broker=f"kafka://{os.environ['MOM_BENCH_BOOTSTRAP']}",
        value_serializer="raw",
        key_serializer="raw",
        web_enabled=False,
        topic_disable_leader=True,
        store="memory://",
        consumer_auto_offset_reset="earliest",
        datadir=os.environ.get("MOM_BENCH_DATADIR", "/tmp/mom-bench-faust"),
    )
    source = app.topic(os.environ["MOM_BENCH_TOPIC"], value_serializer="raw", key_serializer="raw")
    sessions = None

    @app.agent(source)
    async def project(stream):
        try:
            await _project(stream)
        except Exception:  # faust would log the crash and keep the worker alive, idle: end it so the bench sees it
            traceback.print_exc()
            sys.stderr.flush()
            os._exit(3)

    async def _project(stream):
        global sessions
        if sessions is None:
            sessions = async_sessionmaker(make_engine(os.environ["MOM_DATABASE_URL"], os.environ["MOM_DB_SCHEMA"]))
        async for value in stream:
            event_type, record = codec.decode(value)
            row = {"key": catalogue.key_for(event_type, record), "events": 1, "last_event_id": record["event_id"],
                   "last_type": event_type}
            upsert = insert(NaiveRow).values(row)
            upsert = upsert.on_conflict_do_update(index_elements=[NaiveRow.key], set_={
                "events": NaiveRow.events + 1, "last_event_id": upsert.excluded.last_event_id,
                "last_type": upsert.excluded.last_type})
            async with sessions() as session, session.begin():
                await session.execute(upsert)

    logging.basicConfig(level=logging.WARNING)
    app.main()
