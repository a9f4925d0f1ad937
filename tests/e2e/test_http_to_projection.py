"""End to end: HTTP to ingest, Kafka, the execution worker process, a row in PostgreSQL."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from services.cli import prepare
from services.common import localstack
from tests.waiting import positions_of, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


SERVICES = ("ingest", "execution")


@pytest.fixture(scope="module")
def running(stack: localstack.StackConfig) -> Iterator[dict]:
    """The test stack with ingest and execution running as their own processes, as `mom up` runs them."""
    yield localstack.up(stack, services=SERVICES, after_infra=prepare)
    localstack.stop_services(stack, SERVICES)


def post(status: dict, events: list[dict], token: str | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(
        status["ingest"]["url"] + "/v1/events", data=json.dumps(events).encode(), method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token or status['ingest']['token']}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def wait_for(status: dict, sql: str, args: tuple, expected):
    """The rows of `sql` once they equal `expected`, or whatever they are when execution stops making progress."""
    rows: list = []
    with psycopg.connect(status["database"]["service_urls"]["execution"], autocommit=True) as conn:
        def check():
            rows[:] = conn.execute(sql, args).fetchall()
            return rows == expected
        wait_until(check, positions_of(status["database"]["url"], "execution"), interval_s=0.2)
    return rows


def test_events_posted_to_ingest_become_rows_in_the_projection(running):
    press = f"acme.berlin.assembly.line1.press{uuid.uuid4().hex[:6]}"
    events = [
        {"type": "MachineStateChanged", "event_id": f"{press}-1", "occurred_at": "2026-11-02T06:00:00Z",
         "equipment_id": press, "state": "RUNNING"},
        {"type": "PartsProduced", "event_id": f"{press}-2", "occurred_at": "2026-11-02T06:10:00Z",
         "equipment_id": press, "good": 12, "reject": 1},
        {"type": "MachineStateChanged", "event_id": f"{press}-3", "occurred_at": "2026-11-02T06:20:00.250Z",
         "equipment_id": press, "state": "DOWN", "reason_code": "JAM"},
        {"type": "PartsProduced", "event_id": f"{press}-4", "occurred_at": "2026-11-02T07:05:00Z",
         "equipment_id": press, "good": 7, "reject": 0},
        {"type": "PartsProduced", "event_id": f"{press}-bad", "occurred_at": "2026-11-02T07:05:00Z",
         "equipment_id": press, "good": "seven", "reject": 0},
    ]
    code, answer = post(running, events)
    assert code == 202
    assert (answer["accepted"], answer["rejected"]) == (4, 1)
    assert answer["results"][4]["errors"][0]["field"] == "good"

    state = wait_for(running, "SELECT state, reason_code, since::text FROM execution.equipment_state WHERE equipment_id = %s",
                     (press,), [("DOWN", "JAM", "2026-11-02 06:20:00.25+00")])
    assert state == [("DOWN", "JAM", "2026-11-02 06:20:00.25+00")]
    counts = wait_for(running, "SELECT hour_start::text, good, reject FROM execution.hourly_counts "
                      "WHERE equipment_id = %s ORDER BY 1", (press,),
                      [("2026-11-02 06:00:00+00", 12, 1), ("2026-11-02 07:00:00+00", 7, 0)])
    assert counts == [("2026-11-02 06:00:00+00", 12, 1), ("2026-11-02 07:00:00+00", 7, 0)]

    # Resending the same batch is harmless: the counts do not move. A later report of the same
    # press (same partition, so processed after the resend) marks when the resend has been seen.
    code, _ = post(running, events[:4])
    assert code == 202
    marker = {"type": "PartsProduced", "event_id": f"{press}-marker", "occurred_at": "2026-11-02T08:00:00Z",
              "equipment_id": press, "good": 1, "reject": 0}
    assert post(running, [marker])[0] == 202
    assert wait_for(running, "SELECT hour_start::text, good FROM execution.hourly_counts "
                    "WHERE equipment_id = %s AND hour_start >= '2026-11-02 08:00Z'", (press,),
                    [("2026-11-02 08:00:00+00", 1)]) == [("2026-11-02 08:00:00+00", 1)]
    assert wait_for(running, "SELECT sum(good) FROM execution.hourly_counts WHERE equipment_id = %s "
                    "AND hour_start < '2026-11-02 08:00Z'", (press,), [(19,)]) == [(19,)]


def test_a_client_without_a_valid_token_is_refused(running):
    code, answer = post(running, [{"type": "PartsProduced"}], token="not-the-token")
    assert code == 401
    assert "token" in json.dumps(answer).lower()


def test_the_services_report_ready_and_expose_metrics(running):
    with urllib.request.urlopen(running["services"]["execution"]["metrics"].replace("/metrics", "/readyz"),
                                timeout=10) as response:
        assert response.status == 200
    with urllib.request.urlopen(running["services"]["execution"]["metrics"], timeout=10) as response:
        text = response.read().decode()
    assert "mom_events_processed_total" in text and "mom_batch_duration_seconds_bucket" in text
