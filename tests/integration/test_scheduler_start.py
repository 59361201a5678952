"""The leading scheduler's start against a real nats-server: a loop it starts before its main ones
(the targets' follower, which the leader waits on for its snapshot) that fails ends the scheduler
loudly, so that it is restarted, instead of leaving it up, unready and deaf.
"""

from __future__ import annotations

import asyncio

import pytest
from nats.js.errors import NotFoundError

from chaosbus.common import bus as busmod
from chaosbus.common import config as cbconfig
from chaosbus.common import subjects
from chaosbus.scheduler import app as scheduler_app
from chaosbus.scheduler.metrics import SchedulerMetrics

pytestmark = pytest.mark.integration
ENDS_WITHIN_S = 30.0  # a lease write and one refused subscription; margin for a loaded machine


async def test_a_targets_follower_that_fails_before_its_snapshot_ends_the_scheduler(bus: busmod.Bus) -> None:
    # The follower's subscription refused for good: the bucket's stream is gone (the handle the
    # scheduler uses was made before, so nothing declares it again).
    await bus.js.delete_stream(f"KV_{subjects.TARGETS.name}")
    serving = asyncio.ensure_future(
        scheduler_app.serve(
            bus,
            SchedulerMetrics(),
            scheduler_app.selection_config(cbconfig.ControllerScope()),
            instance="s1",
            signer=None,
            leader_ttl=5.0,
        )
    )
    try:
        done, _ = await asyncio.wait([serving], timeout=ENDS_WITHIN_S)
        assert serving in done, f"the scheduler still runs {ENDS_WITHIN_S:.0f} s after its targets' follower failed"
        with pytest.raises(NotFoundError):
            serving.result()
    finally:
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
