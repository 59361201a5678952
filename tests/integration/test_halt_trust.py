"""Those who refuse new experiments while the kill switch is engaged (the direct trigger
`chaos.trigger.apply`, `chaosbus apply`, `chaosbus status`) read its stored state as the injectors
take it when they have the kill-switch keys: a resume signed with the SLO guard's halt-only key,
or by a key nobody trusts, leaves it engaged; the operator's resume releases it. Against a real
nats-server and the scheduler's real trigger handler.
"""

from __future__ import annotations

import json

import pytest
from helpers.signing import GUARD, OPERATOR, SCHEDULER, TRUST

from chaosbus.common import bus as busmod
from chaosbus.common import halt, signing, subjects
from chaosbus.common import messages as m
from chaosbus.common.store import ObjectStore
from chaosbus.scheduler import requests as rq
from chaosbus.scheduler.triggers import Triggers

pytestmark = pytest.mark.integration

HELLO = json.dumps(
    {
        "apiVersion": "chaos-mesh.org/v1alpha1",
        "kind": "HelloWorldChaos",
        "metadata": {"name": "after-halt", "namespace": "default"},
        "spec": {"mode": "all", "selector": {"namespaces": ["default"]}},
    }
).encode()


async def test_a_resume_signed_with_the_guard_key_keeps_new_experiments_refused(bus: busmod.Bus) -> None:
    triggers = Triggers(bus, ObjectStore(await bus.bucket(subjects.OBJECT_STORE)), TRUST)
    await halt.set_halt(bus, halted=True, reason="SLO guard checkout: breached", signer=GUARD, by="guard checkout")
    with pytest.raises(rq.BadRequest, match="SLO guard checkout: breached"):
        await triggers.apply(HELLO)
    await halt.set_halt(bus, halted=False, reason="resumed", signer=GUARD, by="guard checkout")
    with pytest.raises(rq.BadRequest, match="a resume signed with the guard key was refused"):
        await triggers.apply(HELLO)
    # Advisory readers without the keys would have let it through: the reason to check.
    advisory = await halt.current(bus)
    assert advisory is not None and not advisory.halted

    wrong = SCHEDULER.seal_message(signing.CONTROL_AUD, m.HaltState(halted=False, at=1.0), ttl_s=None)
    await (await bus.kv(subjects.CONTROL.name)).put(subjects.HALT_KEY, wrong)
    with pytest.raises(rq.BadRequest, match="not trusted"):
        await triggers.apply(HELLO)

    await halt.set_halt(bus, halted=False, reason="resumed", signer=OPERATOR)
    applied = await triggers.apply(HELLO)
    assert (applied.kind, applied.name) == ("HelloWorldChaos", "after-halt")
