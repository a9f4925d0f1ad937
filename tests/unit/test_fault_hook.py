"""The chaos test's fault hook in the outbox relay: inert unless MOM_FAULT_KILL_AFTER_COMMIT is set."""
from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest

from services.common.outbox import FAULT_KILL_AFTER_COMMIT, kill_after_commit_probability

WAKE = textwrap.dedent("""
    import asyncio
    from services.common.outbox import OutboxRelay

    async def main():
        relay = OutboxRelay("test", engine=None, producer=None)
        for _ in range(50):
            relay.wake()
        print("alive")

    asyncio.run(main())
""")


@pytest.mark.parametrize(("raw", "expected"), [
    (None, 0.0), ("", 0.0), ("0", 0.0), ("0.25", 0.25), ("1", 1.0), ("7", 1.0), ("-1", 0.0), ("often", 0.0),
])
def test_the_probability_is_read_from_the_environment_and_clamped(raw, expected):
    env = {} if raw is None else {FAULT_KILL_AFTER_COMMIT: raw}
    assert kill_after_commit_probability(env) == expected


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
