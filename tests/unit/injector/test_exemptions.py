"""Which endpoints partition and shaping must never cut: CHAOSBUS_EXEMPT plus the NATS URL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from chaosbus.common import settings
from chaosbus.injector.backends import exemptions
from chaosbus.injector.backends.exemptions import Exemptions


@pytest.fixture(autouse=True)
def fresh(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(exemptions.ENV, raising=False)
    settings.reset()
    yield
    settings.reset()


def test_nats_url_it_connects_to_is_exempt() -> None:
    exempt = Exemptions("nats://127.0.0.1:4333")
    assert exempt.endpoints() == (("127.0.0.1/32", 4333),)


def test_several_servers_credentials_and_default_port() -> None:
    exempt = Exemptions("nats://u:p@10.0.0.7,tls://10.0.0.8:4443")
    assert exempt.endpoints() == (("10.0.0.7/32", 4222), ("10.0.0.8/32", 4443))


def test_env_entries_add_addresses_cidrs_and_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(exemptions.ENV, "10.96.0.1:443, 10.244.0.0/16,192.0.2.9 , not a host!")
    exempt = Exemptions("nats://127.0.0.1:4222")
    assert exempt.endpoints() == (
        ("10.244.0.0/16", None),
        ("10.96.0.1/32", 443),
        ("127.0.0.1/32", 4222),
        ("192.0.2.9/32", None),
    )


def test_hostnames_are_resolved_and_unresolvable_ones_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(exemptions.ENV, "localhost:6443,no-such-host.invalid")
    exempt = Exemptions("nats://localhost:4222")
    assert set(exempt.endpoints()) == {("127.0.0.1/32", 6443), ("127.0.0.1/32", 4222)}


def test_the_settings_read_at_start_decide(monkeypatch: pytest.MonkeyPatch) -> None:
    exempt = Exemptions("nats://127.0.0.1:4222")
    before = exempt.endpoints()
    monkeypatch.setenv(exemptions.ENV, "10.0.0.1")
    assert exempt.endpoints() == before  # a process reads its settings once
    settings.reset()
    assert set(exempt.endpoints()) == {*before, ("10.0.0.1/32", None)}


def test_each_injector_exempts_its_own_nats_server() -> None:
    """Two injectors in one process (two Backends) each keep the server they talk to."""
    one, two = Exemptions("nats://127.0.0.1:4333"), Exemptions("nats://127.0.0.2:4444")
    assert one.endpoints() == (("127.0.0.1/32", 4333),)
    assert two.endpoints() == (("127.0.0.2/32", 4444),)
