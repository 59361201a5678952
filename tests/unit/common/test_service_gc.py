"""Every service process tunes the garbage collector at start (service.run): large young
generations, and what start-up built frozen out of every collection. Checked in a child process,
since freezing would change the test process itself.
"""

from __future__ import annotations

import json
import subprocess
import sys

from chaosbus.common import service


def test_tune_gc_raises_thresholds_and_freezes_startup_objects() -> None:
    code = (
        "import gc, json; from chaosbus.common import service; service.tune_gc(); "
        "print(json.dumps([gc.get_threshold(), gc.get_freeze_count()]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    thresholds, frozen = json.loads(out.stdout)
    assert tuple(thresholds) == service.GC_THRESHOLDS and thresholds[0] > 700  # CPython's default is 700
    assert frozen > 1000  # the imported modules' objects
