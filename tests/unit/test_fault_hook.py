"""The chaos test's fault hooks in the outbox relay: inert unless MOM_FAULT_KILL_AFTER_COMMIT (or
_AFTER_PUBLISH) is set; and the marker that names what a relay transaction published."""
from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest

from services.common.outbox import (
    FAULT_KILL_AFTER_COMMIT,
    FAULT_KILL_AFTER_PUBLISH,
    MARKER_CHARS,
    decode_marker,
    encode_marker,
    fault_probability,
    fitting,
)

WAKE = textwrap.dedent("""
    import asyncio
    from services.common.outbox import OutboxRelay

    async def main():
        relay = OutboxRelay("test", engine=None, clients=None, marker_topic=None)
        for _ in range(50):
            relay.wake()
        print("alive")

    asyncio.run(main())
""")


@pytest.mark.parametrize(("raw", "expected"), [
    (None, 0.0), ("", 0.0), ("0", 0.0), ("0.25", 0.25), ("1", 1.0), ("7", 1.0), ("-1", 0.0), ("often", 0.0),
])
@pytest.mark.parametrize("variable", [FAULT_KILL_AFTER_COMMIT, FAULT_KILL_AFTER_PUBLISH])
def test_the_probability_is_read_from_the_environment_and_clamped(raw, expected, variable):
    env = {} if raw is None else {variable: raw}
    assert fault_probability(variable, env) == expected


def run_wake(env_value: str | None) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin"}
    if env_value is not None:
        env[FAULT_KILL_AFTER_COMMIT] = env_value
    return subprocess.run([sys.executable, "-c", WAKE], env=env, capture_output=True, text=True, timeout=60,
                          cwd=str(__import__("pathlib").Path(__file__).resolve().parents[2]))


def test_without_the_variable_a_commit_wakes_the_relay_and_nothing_dies():
    done = run_wake(None)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "alive"


def test_with_probability_one_the_process_kills_itself_right_after_the_commit():
    done = run_wake("1")
    assert done.returncode == -signal.SIGKILL
    assert "alive" not in done.stdout


@pytest.mark.parametrize("ids", [[], [7], [1, 2, 3], [1, 2, 3, 5, 9, 10, 11, 40], [10**12, 10**12 + 1], list(range(1, 5001))])
def test_a_marker_names_exactly_the_ids_it_was_made_of(ids):
    assert decode_marker(encode_marker(16401, ids)) == (16401, ids)


def test_a_marker_of_a_contiguous_batch_is_one_run():
    assert encode_marker(5, list(range(36, 5036))) == "5:10-3vv"


@pytest.mark.parametrize("marker", [None, "", "no colon", "12:zz-@", "x:1-2"])
def test_what_the_relay_did_not_write_is_no_marker(marker):
    assert decode_marker(marker) is None


def test_ids_full_of_gaps_are_cut_to_what_one_marker_can_name():
    ids = list(range(0, 20000, 2))  # every run a single id: far more than a marker holds
    n = fitting(16401, ids)
    assert 0 < n < len(ids)
    assert len(encode_marker(16401, ids[:n])) <= MARKER_CHARS
    assert fitting(16401, list(range(5000))) == 5000
