"""The house rules CI enforces: ruff, mypy --strict, the import-linter contracts, no shell on the
code path, and docs that match the subject table.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from chaosbus.common import subjects

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def test_ruff_is_clean() -> None:
    ruff = BIN / "ruff"
    if not ruff.exists():
        pytest.skip("ruff is not installed in this environment (pip install -e '.[dev]')")
    done = subprocess.run([str(ruff), "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_ruff_format_is_applied() -> None:
    ruff = BIN / "ruff"
    if not ruff.exists():
        pytest.skip("ruff is not installed in this environment (pip install -e '.[dev]')")
    done = subprocess.run([str(ruff), "format", "--check", "."], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, "run `ruff format .`:\n" + done.stdout + done.stderr


def test_mypy_strict_and_import_contracts_hold() -> None:
    if not (BIN / "mypy").exists() or not (BIN / "lint-imports").exists() or shutil.which("bash") is None:
        pytest.skip("mypy or import-linter is not installed in this environment")
    done = subprocess.run(["bash", "scripts/typecheck.sh"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_no_shell_anywhere_on_the_code_path() -> None:
    pattern = re.compile(r"shell\s*=\s*True|os\.system\(|os\.popen\(")
    offenders = [
        f"{p.relative_to(ROOT)}:{n}"
        for folder in ("libs", "services", "cli")
        for p in (ROOT / folder).rglob("*.py")
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert offenders == []


def test_architecture_doc_shows_the_current_subject_table() -> None:
    doc = (ROOT / "docs" / "architecture.md").read_text()
    assert subjects.markdown_table() in doc, (
        "regenerate the table: python -c 'from chaosbus.common import subjects; print(subjects.markdown_table())'"
    )


@pytest.mark.parametrize("folder", ["libs/common", "services", "cli"])
def test_every_module_states_its_role_and_stays_small(folder: str) -> None:
    for path in (ROOT / folder).rglob("*.py"):
        text = path.read_text()
        if path.name == "__init__.py" and not text.strip():
            continue
        assert text.lstrip().startswith(('"""', "'''")), f"{path.relative_to(ROOT)} has no module docstring"
        assert len(text.splitlines()) <= 550, f"{path.relative_to(ROOT)} is over ~500 lines"
