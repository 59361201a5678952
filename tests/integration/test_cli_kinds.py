"""`chaosbus get`, `describe` and `delete` know every registered kind by every name it has (kind,
plural, short names, Chaos Mesh's short names, aliases), against a real nats-server: the CLI's
names come from the kind descriptors, so no kind `apply` accepts is unknown to the other verbs.
"""

from __future__ import annotations

import pytest

from chaosbus.cli import main as cli
from chaosbus.common import bus as busmod
from chaosbus.common import natsserver, subjects
from chaosbus.common.crd import API_VERSION, kinds
from chaosbus.common.store import ObjectStore

pytestmark = pytest.mark.integration


async def run(capsys: pytest.CaptureFixture[str], url: str, *argv: str) -> str:
    assert await cli.dispatch(cli.build_parser().parse_args(["--nats", url, *argv])) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("kind", list(kinds.KINDS))
async def test_every_name_of_the_kind_gets_describes_and_deletes(
    kind: str, bus: busmod.Bus, nats_server: natsserver.EmbeddedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    store = ObjectStore(await bus.bucket(subjects.OBJECT_STORE))
    url = nats_server.url
    for name in (kind, *kinds.KINDS[kind].names):
        obj = f"obj-{name.lower()}"
        await store.create(
            {"apiVersion": API_VERSION, "kind": kind, "metadata": {"name": obj, "namespace": "default"}, "spec": {}}
        )
        assert obj in await run(capsys, url, "get", name), name
        assert f"Kind:         {kind}" in await run(capsys, url, "describe", name, obj), name
        assert "deleted" in await run(capsys, url, "delete", name, obj, "--wait", "0"), name
        assert await store.get(kind, "default", obj) is None, name
