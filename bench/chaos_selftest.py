"""The chaos self-test of chaosbus at full length: 200 cycles of random experiments (partition,
pod-kill, HelloWorld) while kill -9 hits the injector, scheduler, recorder and nats-server at
random moments; then every experiment must be in its expected final state and no test netns or
process may hold anything of ours. Prints the figures; exit code 1 if anything is off.

    sudo .venv/bin/python bench/chaos_selftest.py [--cycles 200] [--seed N] [--kill-probability 0.6]

Needs root, nftables and iproute2 (as `make test`'s privileged tests). A few cycles of the same
test run in `make test` (tests/e2e/test_recovery.py).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from helpers.selftest import SelfTest  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cycles", type=int, default=200)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--kill-probability", type=float, default=0.6, help="chance of a kill -9 per cycle")
    p.add_argument("--max-duration", type=float, default=8.0, help="longest experiment duration (s)")
    p.add_argument("--workdir", type=Path, default=None, help="keep state and logs here (default: a temp dir)")
    args = p.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="chaosbus-selftest-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"chaos self-test: {args.cycles} cycles, seed {args.seed}, logs in {workdir}", flush=True)
    st = SelfTest(
        workdir,
        cycles=args.cycles,
        seed=args.seed,
        kill_probability=args.kill_probability,
        max_duration=args.max_duration,
        settle_s=180.0,
    )
    report = asyncio.run(st.run())
    print("\n".join(report.lines()))
    ok = not report.not_final and not report.leftovers
    print("RESULT: " + ("every experiment final, zero leftovers" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
