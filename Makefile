# The two set-up commands: `make demo` and `make test`. Both create .venv and install everything.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast test-kernel lint typecheck bench fuzz screenshots clean

# Package folders are mapped at install time, so a new one (a new __init__.py) needs a reinstall.
PACKAGES := $(wildcard libs/*/__init__.py libs/*/*/__init__.py services/*/__init__.py services/*/*/__init__.py services/*/*/*/__init__.py cli/__init__.py)

NATIVE_SOURCES := $(wildcard native/*.c native/*.h native/*.ld native/Makefile)

$(STAMP): pyproject.toml scripts/install-system-deps.sh $(PACKAGES) $(NATIVE_SOURCES)
	bash scripts/install-system-deps.sh
	$(MAKE) -C native
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/chaosbus demo

# Tests run on TEST_WORKERS pytest-xdist workers (most wait on processes, the kernel and timers,
# so more workers than cores pays on 2 cores); tests sharing an expensive session fixture are kept
# on one worker by tests/conftest.py. TEST_WORKERS=0 runs everything in one process.
TEST_WORKERS ?= 4
PYTEST := $(PY) -m pytest -q $(if $(filter 0,$(TEST_WORKERS)),-p no:xdist,-n $(TEST_WORKERS) --dist loadgroup)

test: install
	$(PYTEST) --durations=25

# Unit and contract tests only (no live system, no kernel, no API server): the quick loop while
# editing. Admission's property test runs 300 inputs here (1,500 in `make test`, 100,000 in `make fuzz`).
test-fast: install
	CHAOSBUS_FUZZ_EXAMPLES=$(or $(FUZZ_EXAMPLES),300) $(PYTEST) tests/unit tests/contract

# The kernel lane (root): the tests that need sch_netem, inside a QEMU VM booting Debian's stock
# kernel (about 3 minutes; ~900 MB of packages the first time). See docs/network.md.
test-kernel: install
	bash scripts/install-kernel-lane.sh
	$(PY) scripts/kernel_lane.py

# The benchmarks (needs root): `make bench`, or `make bench BENCH_QUICK=1` (< 60 s);
# extra flags through BENCH_ARGS, e.g. BENCH_ARGS='--sizes 1,10 --profile'. See docs/benchmarks.md.
bench: install
	$(PY) -m bench $(if $(filter 1,$(BENCH_QUICK)),--quick) $(BENCH_ARGS)
	$(PY) -m bench.bench_dns $(if $(filter 1,$(BENCH_QUICK)),--sizes 1,10 --queries 200)
	$(PY) -m bench.bench_http $(if $(filter 1,$(BENCH_QUICK)),--sizes 1,10 --requests 200)
	$(PY) -m bench.bench_stress $(if $(filter 1,$(BENCH_QUICK)),--sizes 1,10)
	$(PY) -m bench.bench_io $(if $(filter 1,$(BENCH_QUICK)),--runs 5 --mib 16 --stats 300 --rounds 3)
	$(PY) -m bench.bench_node $(if $(filter 1,$(BENCH_QUICK)),--runs 30)
	$(PY) -m bench.bench_lease $(if $(filter 1,$(BENCH_QUICK)),--runs 30)
	$(PY) -m bench.bench_nats_restart $(if $(filter 1,$(BENCH_QUICK)),--cycles 5)
	$(PY) -m bench.bench_restart $(if $(filter 1,$(BENCH_QUICK)),--restarts 5 --warm 3)

# The full property test of admission and the scheduler's decode: 100,000 random inputs (~10 min);
# `make test` runs 1,500 of them. FUZZ_EXAMPLES=N for another count.
fuzz: install
	CHAOSBUS_FUZZ_EXAMPLES=$(or $(FUZZ_EXAMPLES),100000) $(PY) -m pytest -q -p no:cacheprovider \
		-o addopts='--import-mode=importlib' --timeout=0 tests/unit/common/test_admission_fuzz.py

# The dashboard's screenshots in docs/images, taken by its browser test against a live system (root).
screenshots: install
	CHAOSBUS_DASHBOARD_SCREENSHOTS=$(CURDIR)/docs/images $(PY) -m pytest -q -p no:xdist \
		tests/e2e/test_dashboard_browser.py

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	bash scripts/typecheck.sh

clean:
	rm -rf $(VENV) build *.egg-info
