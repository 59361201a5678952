"""The settings table (libs/common/settings.py) is the only reader of the environment: every
variable has its typed field and default, docs/configuration.md's table is generated from it, and
no other module of the services, libs or CLI reads `os.environ` itself."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from chaosbus.common import settings

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [
    p
    for d in ("libs", "services", "cli")
    for p in (ROOT / d).rglob("*.py")
    if p.name != "settings.py" or p.parent.name != "common"
]
# A read of the process's environment; writes (for children) and copies passed to children are not.
READ = re.compile(r"os\.environ\.get\(|os\.getenv\(|os\.environ\[[^\]]+\](?!\s*=[^=])")


def test_every_variable_has_a_typed_field_with_its_default() -> None:
    fields = [f.name for f in dataclasses.fields(settings.Settings) if f.name != "given"]
    assert sorted(s.field for s in settings.SETTINGS) == sorted(fields)
    assert len({s.env for s in settings.SETTINGS}) == len(settings.SETTINGS)
    defaults = settings.from_env({s.env: s.default for s in settings.SETTINGS})
    assert dataclasses.replace(defaults, given=frozenset()) == settings.Settings()


def test_a_bad_value_names_its_variable() -> None:
    with pytest.raises(settings.InvalidSetting, match="CHAOSBUS_MAX_TARGETS: 'many' is not an integer"):
        settings.from_env({"CHAOSBUS_MAX_TARGETS": "many"})
    with pytest.raises(settings.InvalidSetting, match="CLUSTER_SCOPED: 'yes' is not a boolean"):
        settings.from_env({"CLUSTER_SCOPED": "yes"})
    given = settings.from_env({"CHAOSBUS_LEASE_SECONDS": " 2.5 ", "PROTECTED_NAMESPACES": ""})
    assert given.lease_seconds == 2.5 and given.is_set("PROTECTED_NAMESPACES") and not given.is_set("KUBECONFIG")


def test_the_documented_table_is_the_generated_one() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text()
    table = text.split("<!-- settings table: generated -->\n", 1)[1].split("<!-- end of generated table -->", 1)[0]
    assert table == settings.markdown(), "run: python -m chaosbus.common.settings"


def test_no_other_module_reads_the_environment() -> None:
    readers = [
        f"{p.relative_to(ROOT)}:{n}: {line.strip()}"
        for p in SOURCES
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if READ.search(line)
    ]
    assert readers == [], "read settings through chaosbus.common.settings.current()"
