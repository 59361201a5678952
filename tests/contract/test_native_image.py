"""The image's native stage agrees with native/Makefile and with the injector: every helper the
injector looks up is built by `make -C native` and copied from the stage to CHAOSBUS_NATIVE_DIR;
the stage installs every tool the Makefile's recipes call (its compiler stays in that stage); and
the stage's build works from native/ alone, as the stage copies nothing else. The image itself is
built only where a Docker daemon answers (none on the CI machine: that test skips and says so).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NATIVE_DIR = "/opt/chaosbus/native"


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(instruction, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    text = (ROOT / "Dockerfile").read_text()
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    return [(m.group(1), m.group(2).strip()) for m in re.finditer(r"^([A-Z]+)\s+(.*)$", joined, re.M)]


def stages() -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = {}
    current = ""
    for ins, args in dockerfile_instructions():
        if ins == "FROM":
            parts = args.split()
            current = parts[2] if len(parts) > 2 and parts[1].upper() == "AS" else "final"
            out[current] = []
        out.setdefault(current, []).append((ins, args))
    return out


def looked_up_helpers() -> set[str]:
    """Every native helper name the services ask for (`helper("x")`, `native_dir() / "x"`)."""
    found: set[str] = set()
    for path in (ROOT / "services").rglob("*.py"):
        text = path.read_text()
        found |= set(re.findall(r"\bhelper\(\"([\w.-]+)\"\)", text))
        found |= set(re.findall(r"native_dir\(\) / \"([\w.-]+)\"", text))
    return found


def makefile_targets() -> set[str]:
    text = (ROOT / "native" / "Makefile").read_text()
    [all_line] = re.findall(r"^all:(.*)$", text, re.M)
    return {t.removeprefix("$(B)/") for t in all_line.split()}


def copied_from_native() -> tuple[set[str], str]:
    [(_, args)] = [(i, a) for i, a in stages()["final"] if i == "COPY" and a.startswith("--from=native ")]
    *sources, dest = args.split()[1:]
    return {Path(s).name for s in sources if s.startswith("/build/native/build/")}, dest.rstrip("/")


def test_every_helper_the_injector_looks_up_is_built_and_shipped() -> None:
    wanted = looked_up_helpers()
    assert {"nsexec", "timeskew", "skew_payload.bin", "iofs"} <= wanted  # the scan still finds them
    assert wanted <= makefile_targets()
    shipped, dest = copied_from_native()
    assert wanted <= shipped, f"not copied into the image: {sorted(wanted - shipped)}"
    assert dest == NATIVE_DIR
    assert ("ENV", f"CHAOSBUS_NATIVE_DIR={NATIVE_DIR}") in stages()["final"]


def test_the_native_stage_has_every_tool_the_makefile_calls_and_the_final_image_none() -> None:
    native = " ".join(a for i, a in stages()["native"] if i == "RUN")
    final = " ".join(a for i, a in stages()["final"] if i == "RUN")
    assert ("RUN", "make -C native") in stages()["native"]
    assert ("COPY", "native native") in stages()["native"]
    makefile = (ROOT / "native" / "Makefile").read_text()
    needs = {"gcc": "$(CC)", "libc6-dev": "$(CC)", "make": "", "binutils": "objcopy"}
    if "meson setup" in makefile:  # libfuse is built from source
        needs |= {"meson": "meson setup", "ninja-build": "ninja -C"}
    for package, used_by in needs.items():
        assert used_by in makefile, used_by
        assert re.search(rf"apt-get install[^&]*\s{re.escape(package)}(\s|$)", native), package
    for package in ("gcc", "make", "binutils", "libfuse3-dev"):
        assert not re.search(rf"apt-get install[^&]*\s{re.escape(package)}(\s|$)", final), package
    if "pkg-config --libs fuse3" in makefile:  # linked dynamically: the runtime library must ship
        assert re.search(r"apt-get install[^&]*\slibfuse3-3(\s|$)", final)


@pytest.mark.skipif(
    shutil.which("cc") is None or shutil.which("make") is None,
    reason="cc and make are installed by scripts/install-system-deps.sh (make install)",
)
def test_the_stage_build_needs_nothing_outside_native(tmp_path: Path) -> None:
    if shutil.which("meson") is None or shutil.which("ninja") is None:
        pytest.skip("meson and ninja (libfuse's build) are installed by scripts/install-system-deps.sh (make install)")
    build = tmp_path / "native"  # what `COPY native native` gives the stage, minus the host's build/
    shutil.copytree(ROOT / "native", build, ignore=shutil.ignore_patterns("build"))
    done = subprocess.run(["make", "-C", str(build), "-j2"], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    shipped, _ = copied_from_native()
    assert all((build / "build" / name).stat().st_size > 0 for name in shipped)


def _docker_daemon() -> str | None:
    if shutil.which("docker") is None:
        return "no docker client"
    probe = subprocess.run(
        ["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True, timeout=20
    )
    return None if probe.returncode == 0 else f"no Docker daemon answers ({probe.stderr.strip()[:120]})"


def test_the_native_stage_builds_in_docker() -> None:
    why = _docker_daemon()
    if why:
        pytest.skip(f"{why}: the stage is checked against native/Makefile above instead")
    done = subprocess.run(
        ["docker", "build", "--target", "native", "-q", str(ROOT)], capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr[-2000:]
