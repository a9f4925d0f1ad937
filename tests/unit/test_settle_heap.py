"""A worker process tunes the garbage collector once it has started: start-up objects frozen out of
the collector's sight, and rarer collections of the youngest generation."""
from __future__ import annotations

import json
import subprocess
import sys

from services.common.runtime import GC_THRESHOLDS


def test_settling_the_heap_freezes_what_start_up_made_and_raises_the_thresholds():
    probe = ("import gc, json; import services.execution.app; before = gc.get_freeze_count();"
             "from services.common.runtime import settle_heap; settle_heap();"
             "print(json.dumps([before, gc.get_freeze_count(), gc.get_threshold()]))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    before, frozen, thresholds = json.loads(out)
    assert before == 0
    assert frozen > 10_000  # the imported modules' objects, at least
    assert tuple(thresholds) == GC_THRESHOLDS
    assert GC_THRESHOLDS[0] > 700  # rarer than the interpreter's default
