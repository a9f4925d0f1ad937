"""The genealogy trace answers within a second for 10,000 lots ten levels deep, both ways, now and as of
a past time (the figures are printed; bench/inventory.py runs the same measurement on its own)."""
from __future__ import annotations

import uuid

import psycopg
import pytest

from bench.inventory import T0 as DAY0
from bench.inventory import build_genealogy, lot_name, time_trace
from services.common.migrations import upgrade

pytestmark = pytest.mark.integration
LEVELS, PER_LEVEL = 10, 1000


@pytest.fixture(scope="module")
def genealogy(prepared):
    schema = f"inventory_speed_{uuid.uuid4().hex[:8]}"
    upgrade(prepared.superuser_url, "inventory", schema=schema)
    built = build_genealogy(prepared.superuser_url, schema, levels=LEVELS, per_level=PER_LEVEL)
    yield prepared.superuser_url, schema, built
    with psycopg.connect(prepared.superuser_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.mark.parametrize("start_level, forward, as_of_day, depth", [
    (0, False, None, LEVELS - 1),   # all ancestors of a finished lot
    (LEVELS - 1, True, None, LEVELS - 1),  # all descendants of a raw lot
    (0, False, 20, LEVELS - 1),     # as of a past time: only the first half of the last consumptions
    (LEVELS - 1, True, 12, 5),      # as of a past time: five generations had been made
])
def test_a_trace_of_ten_thousand_lots_ten_levels_deep_takes_under_a_second(genealogy, start_level, forward,
                                                                           as_of_day, depth):
    from datetime import timedelta
    url, schema, built = genealogy
    assert built["lots"] == LEVELS * PER_LEVEL
    as_of = DAY0 + timedelta(days=as_of_day) if as_of_day is not None else None
    result = time_trace(url, schema, lot_name(start_level, 0), forward=forward, as_of=as_of)
    print(f"\ntrace {'forward' if forward else 'backward'} as of {as_of}: {result}")
    assert result["depth"] == depth and result["edges"] > (1000 if as_of is None else 100)
    assert result["max_s"] < 1.0, result
