"""Ingest's translators fuzzed directly: items generated from the Avro schemas of every canonical
input type (tests/chaos/payloads.py), good ones and ones broken on purpose, plus arbitrary JSON.

For every item: no exception escapes; a refusal names, for each broken rule, a field (a JSON path,
empty only for an item that is not an object) and a rule of the documented set, with a message; an
item broken on purpose is refused naming the very field and rule that were broken; a good item
becomes a record the project's codec encodes and decodes back to the same record.
"""
from __future__ import annotations

from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.common.settings import REPO_ROOT
from services.ingest.translators import Accepted, Refused
from tests.chaos.payloads import (
    CATALOGUE,
    CODEC,
    INPUT_TYPES,
    NAMELESS,
    NOW,
    RULES,
    TRANSLATOR,
    arbitrary_items,
    bad_events,
    good_events,
)

EXAMPLES = 200  # per test: most examples are a batch of up to 20 items


def test_every_canonical_input_type_is_fuzzed():
    contexts = {CATALOGUE.topic_for(t).name for t in INPUT_TYPES}
    assert contexts == {"mom.plan.events", "mom.machine.events", "mom.operator.events"}
    files = {p.stem for d in ("plan", "machine", "operator") for p in (REPO_ROOT / "schemas" / d).glob("*.avsc")}
    assert set(INPUT_TYPES) == files


# --------------------------------------------------------------------------------------------
# Properties


def check_refusal(outcome: Refused) -> None:
    assert outcome.errors, "a refusal without a reason"
    for error in outcome.errors:
        assert set(error) == {"field", "rule", "message"}, error
        assert isinstance(error["field"], str) and error["rule"] in RULES and error["message"], error
        assert error["field"] or error["rule"] in NAMELESS, f"only an item that is not an object has no field: {error}"


def check_accepted(item: dict, outcome: Accepted) -> None:
    assert outcome.event_type == item["type"] and outcome.event_id == item["event_id"]
    encoded = CODEC.encode(outcome.event_type, outcome.record)
    event_type, decoded = CODEC.decode(encoded)
    assert event_type == outcome.event_type
    assert decoded["event_id"] == outcome.record["event_id"]
    assert set(decoded) == set(outcome.record)


FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                               HealthCheck.data_too_large])


@FUZZ
@given(st.lists(good_events(), min_size=1, max_size=20))
def test_every_good_item_is_accepted_and_encodes(items):
    outcomes = TRANSLATOR.translate_all(items, now=NOW, client="fuzz")
    for item, outcome in zip(items, outcomes, strict=True):
        assert type(outcome) is Accepted, (item, getattr(outcome, "errors", None))
        check_accepted(item, outcome)


@FUZZ
@given(st.lists(bad_events(), min_size=1, max_size=20))
def test_every_broken_item_is_refused_naming_the_field_and_rule_that_were_broken(broken):
    items = [item for item, _, _ in broken]
    outcomes = TRANSLATOR.translate_all(items, now=NOW, client="fuzz")
    for (item, field, rule), outcome in zip(broken, outcomes, strict=True):
        assert type(outcome) is Refused, item
        check_refusal(outcome)
        named = {(e["field"], e["rule"]) for e in outcome.errors}
        assert (field, rule) in named, (field, rule, outcome.errors)


@FUZZ
@given(st.lists(arbitrary_items(), min_size=1, max_size=20))
def test_arbitrary_json_never_raises_and_every_refusal_names_field_and_rule(items):
    outcomes = TRANSLATOR.translate_all(items, now=NOW, client="fuzz")
    assert [o.index for o in outcomes] == list(range(len(items)))
    for item, outcome in zip(items, outcomes, strict=True):
        if type(outcome) is Refused:
            check_refusal(outcome)
        else:
            check_accepted(item, outcome)


@FUZZ
@given(good_events(), st.integers(0, 400))
def test_the_future_limit_is_exactly_five_minutes_after_arrival(event, offset_s):
    occurred = NOW + timedelta(seconds=offset_s)
    item = {**event, "occurred_at": occurred.strftime("%Y-%m-%dT%H:%M:%SZ")}
    outcome = TRANSLATOR.translate(0, item, now=NOW, client="fuzz")
    if offset_s <= 300:
        assert type(outcome) is Accepted, outcome
    else:
        assert type(outcome) is Refused and ("occurred_at", "future_timestamp") in {
            (e["field"], e["rule"]) for e in outcome.errors}
