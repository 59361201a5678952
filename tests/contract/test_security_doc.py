"""docs/security.md shows each NATS identity's allow-lists exactly as nats-server gets them."""

from __future__ import annotations

from pathlib import Path

from chaosbus.common import natsauth

DOC = Path(__file__).resolve().parents[2] / "docs" / "security.md"


def test_security_doc_shows_the_current_permissions() -> None:
    assert natsauth.markdown_table() in DOC.read_text(), (
        "regenerate the table: python -c 'from chaosbus.common import natsauth; print(natsauth.markdown_table())'"
    )
