"""The short chaos run inside `make test`: the small plant's shift fed through ingest while each
service (ingest included) is SIGKILLed once and restarted (one of them right after a database commit
and before the outbox publish, one while it has work in hand), and execution is scaled 1 -> 2 -> 1.
No broker or PostgreSQL restart (that is `make chaos`, docs/chaos.md). Then every projection equals a
clean replay, every derived topic has unique event ids and the replay's set, and the dead-letter
topic holds exactly the injected bad input.
"""
from __future__ import annotations

import pytest

from services.common import localstack
from tests.chaos.driver import Plan, run, summary

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


@pytest.fixture(scope="module")
def report(stack: localstack.StackConfig) -> dict:
    result, path = run(stack, Plan.short(seed=7), log=lambda line: None)
    print(f"\n{summary(result)}\nreport: {path}")
    return result


def test_the_run_did_what_it_promised(report):
    assert report["failure"] is None, report["failure"]
    assert report["kills"] >= 5 and set(report["kills_by_target"]) == {"ingest", "execution", "quality",
                                                                       "maintenance", "inventory"}
    assert [a["mode"] for a in report["actions"] if a["kind"] == "scale"] == ["2", "1"]
    assert report["sent"]["bad items"] > 0


def test_every_projection_equals_a_clean_replay(report):
    assert {s: r["table_differences"] for s, r in report["services"].items() if r["table_differences"]} == {}


def test_every_derived_topic_has_unique_event_ids(report):
    assert {s: r["duplicate_ids_on_topic"] for s, r in report["services"].items() if r["duplicates"]} == {}


def test_every_derived_topic_holds_the_replays_derived_events(report):
    assert {s: (r["only_on_topic"], r["only_in_replay"]) for s, r in report["services"].items()
            if r["only_on_topic_count"] or r["only_in_replay_count"]} == {}


def test_the_dead_letter_topic_holds_exactly_the_injected_bad_input(report):
    dead = report["dead_letters"]
    assert (dead["missing"], dead["unexpected"], dead["payload_mismatches"]) == ([], {}, [])
    assert dead["on_topic"] == dead["injected"] > 0
