"""Inventory against the real broker and database: receipts, moves, a multi-level genealogy built by
operators' loadings, execution's production and backflush, a quality hold; both traces now and as of a
past time; on-hand as of any time equals the ledger; a replay in other batches gives identical tables."""
from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from services.common.migrations import upgrade
from services.common.replay import seed_positions
from services.common.runtime import build_worker
from services.common.settings import Settings
from services.inventory.app import build as build_inventory
from services.inventory.settings import InventorySettings, parse_reorder_points
from services.inventory.trace import render, trace
from tests.integration.conftest import assert_a_replay_equals
from tests.integration.test_consumer_loop import end_offsets, query, run_until

pytestmark = pytest.mark.integration
T0 = datetime(2026, 11, 2, 6, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


@pytest.fixture
def inventory_scratch(prepared) -> Iterator[Settings]:
    """Worker settings with an empty inventory schema of its own and a fresh consumer group."""
    schema = f"inventory_{uuid.uuid4().hex[:10]}"
    upgrade(prepared.superuser_url, "inventory", schema=schema)
    # Inventory's decisions depend on the order of events across topics: a worker starting on a backlog
    # lets each lagging partition hold the others back this long while it is fetched.
    yield Settings(service="inventory", kafka=prepared.kafka, database_url=prepared.superuser_url,
                   registry_url=prepared.status["registry"]["url"] or "", batch_max_events=500,
                   batch_max_idle_s=5.0, group_id=f"test.{schema}", db_schema=schema)
    with psycopg.connect(prepared.superuser_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def builder(reorder: str = ""):
    domain = InventorySettings(reorder_points=parse_reorder_points(reorder))
    return lambda settings, catalogue: build_inventory(settings, catalogue, domain)


def start_inventory_at_end(prepared, settings: Settings) -> dict[tuple[str, int], int]:
    """Seed the scratch schema at the end of inventory's input topics: the test sees only its own events."""
    from services.common.kafka import end_offsets as kafka_end_offsets

    ends = kafka_end_offsets(settings.kafka, build_inventory(settings, prepared.catalogue).input_topics)
    seed_positions(prepared.superuser_url, settings.db_schema, ends)
    return ends


def record_for(catalogue, event_type: str, fields: dict) -> dict:
    """A record of the catalogued schema: the given fields, and for fields a test does not care about
    (another service's schema may carry more), null, an empty list or a placeholder string."""
    record = dict(fields)
    for field in catalogue.schemas[event_type]["fields"]:
        name, avro_type = field["name"], field["type"]
        if name in record:
            continue
        if "default" in field:
            record[name] = field["default"]
        elif isinstance(avro_type, dict) and avro_type.get("type") == "array":
            record[name] = []
        elif avro_type == "string":
            record[name] = f"test-{name}"
        else:
            raise KeyError(f"{event_type}.{name} needs a value in the test")
    return record


class Log:
    """Events of one scenario, with ids unique to the run and recorded_at in the order they are written."""

    def __init__(self, run: str) -> None:
        self.run = run
        self.events: list[tuple[str, dict]] = []
        # Accepted now, as ingest stamps them: the log stays in acceptance order across test runs, as
        # every partition of a real log is (the loop merges partitions by it).
        self.accepted = datetime.now(UTC)

    def add(self, event_type: str, minutes: float, **body) -> dict:
        n = len(self.events)
        event = {"event_id": f"{self.run}-{n}", "occurred_at": at(minutes),
                 "recorded_at": self.accepted + timedelta(microseconds=n), "source": "test", "correlation_id": None,
                 **body}
        self.events.append((event_type, event))
        return event


def produce_all(prepared, log: Log) -> None:
    from services.common import kafka
    producer = kafka.producer(prepared.kafka)
    for event_type, event in log.events:
        record = record_for(prepared.catalogue, event_type, event)
        producer.produce(prepared.catalogue.topic_for(event_type).name,
                         key=prepared.catalogue.key_for(event_type, record).encode(),
                         value=prepared.codec.encode(event_type, record))
    assert producer.flush(30) == 0


def caught_up(prepared, settings: Settings, topics: tuple[str, ...]):
    targets = {t: end_offsets(prepared, t) for t in topics}

    def check() -> bool:
        rows = dict(query(prepared, settings.db_schema, "SELECT topic, sum(next_offset) FROM positions GROUP BY topic"))
        return all(rows.get(t, 0) >= target for t, target in targets.items())
    return check


async def run_live(prepared, settings: Settings, make=None) -> None:
    make = make or builder()
    worker = build_worker(settings, lambda c: make(settings, c))
    await run_until(worker, caught_up(prepared, settings, worker.spec.input_topics), timeout_s=120)


def scenario(run: str) -> tuple[Log, dict]:
    """Three levels: steel and paint lots -> brackets (WO-A) -> painted brackets (WO-B) -> kits (WO-C)."""
    log = Log(run)
    press = f"acme{run}.berlin.assembly.line1.press07"  # a unit of its own: its current order is this run's
    ids = {k: f"{k}-{run}" for k in ("STEEL", "PAINT", "BOLT", "R1", "R2", "R3", "R4", "WO-A", "WO-B", "WO-C",
                                     "BRACKET", "PAINTED", "KIT")}
    lot_a, lot_b, lot_c = (f"LOT-{ids[o]}" for o in ("WO-A", "WO-B", "WO-C"))
    ids.update(LOT_A=lot_a, LOT_B=lot_b, LOT_C=lot_c)
    log.add("MaterialLotReceived", 0, lot_id=ids["R1"], material_id=ids["STEEL"], quantity=100.0, unit="kg",
            location_id="WH1-A-03")
    log.add("MaterialLotReceived", 1, lot_id=ids["R2"], material_id=ids["STEEL"], quantity=50.0, unit="kg",
            location_id="WH1-A-04")
    log.add("MaterialLotReceived", 2, lot_id=ids["R3"], material_id=ids["PAINT"], quantity=20.0, unit="l",
            location_id="WH2")
    log.add("MaterialLotReceived", 3, lot_id=ids["R4"], material_id=ids["BOLT"], quantity=1000.0, unit="pcs",
            location_id="WH2")
    log.add("MaterialMoved", 5, lot_id=ids["R1"], from_location="WH1-A-03", to_location="LINE1", quantity=60.0)
    # Level 1: operators load both steel lots for WO-A; execution reports its good parts
    log.add("OrderStarted", 10, order_id=ids["WO-A"], product_id=ids["BRACKET"], quantity=10.0, due_at=None,
            operation="0010", equipment_id=press)
    log.add("MaterialLoaded", 10, equipment_id=press, order_id=ids["WO-A"], lot_id=ids["R1"], quantity=60.0)
    log.add("MaterialLoaded", 11, equipment_id=press, order_id=None, lot_id=ids["R2"], quantity=20.0)
    log.add("ProductionReported", 20, order_id=ids["WO-A"], operation="0010", equipment_id=press,
            product_id=ids["BRACKET"], lot_id=lot_a, good=40, scrap=2, final_operation=True)
    # Level 2: paint is backflushed by execution, brackets are loaded by an operator
    log.add("ProductionReported", 30, order_id=ids["WO-B"], operation="0010", equipment_id=press,
            product_id=ids["PAINTED"], lot_id=lot_b, good=30, scrap=0, final_operation=True)
    log.add("MaterialConsumed", 30, order_id=ids["WO-B"], operation="0010", equipment_id=press,
            material_id=ids["PAINT"], quantity=6.0, produced_lot_id=lot_b, backflushed=True)
    log.add("MaterialLoaded", 31, equipment_id=press, order_id=ids["WO-B"], lot_id=lot_a, quantity=30.0)
    # A quality hold on the paint lot: loading it is refused; after the release it is accepted
    log.add("LotHeld", 32, lot_id=ids["R3"], nonconformance_id=f"NC-{run}", reason="viscosity out of spec",
            equipment_id=None, order_id=None, caused_by=f"{run}-insp")
    log.add("MaterialLoaded", 33, equipment_id=press, order_id=ids["WO-B"], lot_id=ids["R3"], quantity=1.0)
    log.add("LotReleased", 34, lot_id=ids["R3"], nonconformance_ids=[f"NC-{run}"], caused_by=f"{run}-disp")
    log.add("MaterialLoaded", 35, equipment_id=press, order_id=ids["WO-B"], lot_id=ids["R3"], quantity=1.0)
    # Level 3: the painted brackets and bolts go into kits
    log.add("MaterialLoaded", 50, equipment_id=press, order_id=ids["WO-C"], lot_id=lot_b, quantity=30.0)
    log.add("MaterialLoaded", 50, equipment_id=press, order_id=ids["WO-C"], lot_id=ids["R4"], quantity=120.0)
    log.add("ProductionReported", 55, order_id=ids["WO-C"], operation="0010", equipment_id=press,
            product_id=ids["KIT"], lot_id=lot_c, good=30, scrap=0, final_operation=True)
    # Losses, and a backflush too large for the stock
    log.add("MaterialLost", 60, lot_id=ids["R2"], quantity=5.0, kind="storage_and_transport", location_id=None,
            equipment_id=None, reason_code="FORKLIFT")
    log.add("MaterialLost", 61, lot_id=ids["R1"], quantity=2.0, kind="production", location_id=None,
            equipment_id=press, reason_code="SETUP")
    log.add("MaterialConsumed", 62, order_id=ids["WO-B"], operation="0010", equipment_id=press,
            material_id=ids["STEEL"], quantity=10_000.0, produced_lot_id=lot_b, backflushed=False)
    return log, ids


def traced(prepared, schema: str, lot: str, forward: bool = False, as_of: datetime | None = None) -> set[tuple]:
    return {(r.lot_id, r.depth, r.quantity) for r in trace(prepared.superuser_url, lot, forward=forward, as_of=as_of,
                                                           schema=schema)}


def recompute_on_hand(movements: list[tuple], until: datetime) -> dict[tuple[str, str], float]:
    totals: dict[tuple[str, str], float] = defaultdict(float)
    for material, location, quantity, occurred_at in movements:
        if occurred_at <= until:
            totals[(material, location)] += quantity
    return {k: round(v, 6) for k, v in totals.items() if abs(v) > 1e-9}


async def test_genealogy_holds_on_hand_and_a_replay_through_the_real_log(prepared, inventory_scratch):
    run = uuid.uuid4().hex[:8]
    reorder = f"STEEL-{run}=100"
    settings = replace(inventory_scratch, batch_max_events=3)
    start = start_inventory_at_end(prepared, settings)
    log, ids = scenario(run)
    produce_all(prepared, log)
    await run_live(prepared, settings, builder(reorder))
    schema = settings.db_schema

    # Lots: the produced lots exist with their good counts; the raw lots are where the story left them
    lots = dict((r[0], r[1:]) for r in query(prepared, schema, "SELECT lot_id, status, quantity FROM lots"))
    assert lots[ids["LOT_A"]] == ("AVAILABLE", 10.0) and lots[ids["LOT_B"]] == ("CONSUMED", 0.0)
    assert lots[ids["LOT_C"]] == ("AVAILABLE", 30.0) and lots[ids["R3"]] == ("AVAILABLE", 13.0)
    assert lots[ids["R1"]] == ("AVAILABLE", 38.0) and lots[ids["R2"]] == ("AVAILABLE", 25.0)

    # Backward trace of the kits: every ancestor with the quantity consumed into its child, and its depth
    backward = traced(prepared, schema, ids["LOT_C"])
    assert backward == {(ids["LOT_B"], 1, 30.0), (ids["R4"], 1, 120.0), (ids["LOT_A"], 2, 30.0), (ids["R3"], 2, 7.0),
                        (ids["R1"], 3, 60.0), (ids["R2"], 3, 20.0)}
    # Forward trace of a steel lot: everything made from it
    assert traced(prepared, schema, ids["R1"], forward=True) == {
        (ids["LOT_A"], 1, 60.0), (ids["LOT_B"], 2, 30.0), (ids["LOT_C"], 3, 30.0)}
    # As of a past time: before the kits were assembled the kits had no ancestors and steel fed two levels
    past = at(40)
    assert traced(prepared, schema, ids["LOT_C"], as_of=past) == set()
    assert traced(prepared, schema, ids["R1"], forward=True, as_of=past) == {(ids["LOT_A"], 1, 60.0),
                                                                              (ids["LOT_B"], 2, 30.0)}
    # ... and before the held paint lot was released only the backflushed paint had gone in
    assert (ids["R3"], 1, 6.0) in traced(prepared, schema, ids["LOT_B"], as_of=at(33))
    text = render(ids["LOT_C"], trace(prepared.superuser_url, ids["LOT_C"], schema=schema), forward=False)
    assert ids["R1"] in text and "ancestors of" in text

    # The held lot: loading it was refused and reported; after the release the same loading was accepted
    refusals = query(prepared, schema, "SELECT attempted, lot_id, lot_status, reason FROM refusals ORDER BY occurred_at")
    assert refusals[0][:3] == ("MaterialLoaded", ids["R3"], "HELD") and "HELD by quality" in refusals[0][3]
    assert refusals[1][:3] == ("MaterialConsumed", None, None) and len(refusals) == 2
    # Reorder point: steel fell below 100 available once (at the first loading), not again
    assert query(prepared, schema, "SELECT below_reorder FROM material_state WHERE material_id = %s",
                 ids["STEEL"]) == [(True,)]

    # On-hand now and as of any time equals a recomputation from the movements
    movements = query(prepared, schema, "SELECT material_id, location_id, quantity, occurred_at FROM movements")
    for cut in [at(m) for m in (0, 4.5, 5, 10, 11, 20, 30, 33, 34, 50, 61, 90)]:
        as_of = {(m, loc): round(q, 6) for m, loc, q in query(prepared, schema, "SELECT * FROM on_hand_at(%s)", cut)}
        assert as_of == recompute_on_hand(movements, cut), cut
    now = {(m, loc): round(q, 6) for m, loc, q in query(prepared, schema,
                                                        "SELECT material_id, location_id, quantity FROM on_hand")}
    assert now == recompute_on_hand(movements, at(10**6))
    assert now[(ids["STEEL"], "WH1-A-03")] == 38.0 and (ids["STEEL"], "LINE1") not in now

    # KPIs: losses per kind over consumed material of the day
    steel = query(prepared, schema, """SELECT cm, pl, stl, production_loss_ratio::float8,
                                              storage_and_transportation_loss_ratio::float8
                                       FROM kpis WHERE material_id = %s""", ids["STEEL"])
    assert steel == [(80.0, 2.0, 5.0, pytest.approx(2 / 80), pytest.approx(5 / 80))]
    # Steel went into brackets with 40 good of 42 made; the day's average steel stock is time-weighted:
    # 0 until 06:00, then 100, 150, 90, 70, 65 and 63 kg until midnight (in minute-kilograms below)
    average = (100 * 1 + 150 * 9 + 90 * 1 + 70 * 49 + 65 * 1 + 63 * (1440 - 421)) / 1440
    assert query(prepared, schema, """SELECT average_inventory, inventory_turns::float8, integrated_goods_ratio::float8
                                      FROM kpis WHERE material_id = %s""", ids["STEEL"]) == [
        (pytest.approx(average), pytest.approx(80 / average), pytest.approx(40 / 42))]
    # All materials: 267 consumed (80 steel, 7 paint, 30 brackets, 30 painted brackets, 120 bolts), 100 made
    assert query(prepared, schema, """SELECT cm, gq, finished_goods_ratio::float8, integrated_goods_ratio::float8
                                      FROM kpis WHERE material_id IS NULL""") == [
        (267.0, 100.0, pytest.approx(100 / 267), pytest.approx((80 * 40 / 42 + 187) / 267))]

    # A replay in large batches gives identical tables
    await assert_a_replay_equals(prepared, inventory_scratch, builder(reorder), schema, start)
