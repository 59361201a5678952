"""Packaging: chaosbus is an implicit namespace package assembled from the repo's folders through
`package-dir`. A built (non-editable) wheel must import on its own, without the repo on the path,
and the editable install must import from the repo folders.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = [
    "common",
    "cli",
    "watcher",
    "scheduler",
    "injector",
    "injector.faults",
    "injector.backends",
    "injector.backends._glue",
    "recorder",
    "common.crd",
]
# The repo folders each package comes from (pyproject's package-dir).
SOURCES = {
    "common": "libs/common",
    "cli": "cli",
    "watcher": "services/watcher",
    "scheduler": "services/scheduler",
    "injector": "services/injector",
    "recorder": "services/recorder",
}
PROBE = (
    "import json, chaosbus.common, chaosbus.common.crd, chaosbus.cli, chaosbus.watcher, chaosbus.scheduler, "
    "chaosbus.injector, chaosbus.injector.faults, chaosbus.injector.backends, chaosbus.injector.backends._glue, "
    "chaosbus.recorder\n"
    "import chaosbus.cli.main, chaosbus.scheduler.core, chaosbus.recorder.core, chaosbus.watcher.core\n"
    "import sys\n"
    f"print(json.dumps({{n: sys.modules['chaosbus.' + n].__file__ for n in {PACKAGES!r}}}))"
)


def _import_files(cwd: Path, pythonpath: str | None) -> dict[str, str | None]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    argv = [sys.executable, "-c", PROBE]
    if pythonpath is not None:
        # -S: no site processing, so the venv's .pth files (the editable finder among them) are not
        # loaded; the venv's site-packages still provides the dependencies, behind the wheel.
        env["PYTHONPATH"] = os.pathsep.join([pythonpath, sysconfig.get_paths()["purelib"]])
        argv.insert(1, "-S")
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    files: dict[str, str | None] = json.loads(done.stdout.strip().splitlines()[-1])
    return files


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the wheel from a copy of the sources, so the build never writes into the work tree."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("libs", "services", "cli"):
        shutil.copytree(ROOT / folder, src / folder, ignore=ignore)
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    [built] = out.glob("chaosbus-*.whl")
    return built


def test_wheel_holds_every_package_and_no_repo_layout(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    for package in PACKAGES:
        assert f"chaosbus/{package.replace('.', '/')}/__init__.py" in names, package
    assert not any(n.startswith(("libs/", "services/", "tests/")) for n in names)
    assert "chaosbus/__init__.py" not in names  # an implicit namespace package


def test_wheel_declares_the_cli_entry_point(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        [entry_points] = [n for n in zf.namelist() if n.endswith(".dist-info/entry_points.txt")]
        assert "chaosbus = chaosbus.cli.main:main" in zf.read(entry_points).decode()


def test_installed_wheel_imports_without_the_repo(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-index",
            "--quiet",
            "--target",
            str(site),
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    files = _import_files(tmp_path, str(site))
    for package, file in files.items():
        assert file is not None, f"chaosbus.{package} has no __init__.py in the wheel"
        assert Path(file).resolve().is_relative_to(site.resolve()), f"chaosbus.{package} came from {file}"


def test_editable_install_imports_from_the_repo_folders(tmp_path: Path) -> None:
    files = _import_files(tmp_path, None)
    for package, folder in SOURCES.items():
        # __file__ None means setuptools' editable finder took the folder for a namespace package
        # (the install predates its __init__.py): re-run `pip install -e .` to refresh it.
        assert files[package] is not None, f"chaosbus.{package}: stale editable install, re-run pip install -e ."
        assert Path(files[package]).resolve() == (ROOT / folder / "__init__.py").resolve(), package
    assert Path(files["injector.faults"]).resolve() == (ROOT / "services/injector/faults/__init__.py").resolve()
    assert Path(files["common.crd"]).resolve() == (ROOT / "libs/common/crd/__init__.py").resolve()
