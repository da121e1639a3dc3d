# hyplex: the two set-up commands are `make demo` and `make test` (see README.md).
# Each creates or reuses .venv and installs what it needs, apt packages included.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.hyplex-installed
# Debian packages the project needs, installed only when missing (CI runs as root):
# MIT Meep for the FDTD reference, run by /usr/bin/python3 in a subprocess (see README).
# python3-meep imports matplotlib without declaring it.
# chromium + chromium-driver: the headless browser of the live-viewer test (Selenium drives
# /usr/bin/chromedriver; no browser download is possible on these machines).
APT_PACKAGES ?= python3-meep python3-matplotlib python3-scipy chromium chromium-driver
# One thread for BLAS in numpy-side eigen-solves (see README, "Environment").
export OPENBLAS_NUM_THREADS ?= 1
export MPLBACKEND ?= Agg

.PHONY: demo test test-slow lint bench bench-quick clean system-deps

system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y --no-install-recommends $$missing; \
	fi
	@$(PYTHON) -c "import venv" || { echo "error: $(PYTHON) has no venv module"; exit 1; }

$(STAMP): pyproject.toml | system-deps
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first and pinned: the local CPU wheel (an unpinned torch pulls a multi-GB CUDA build)
	$(PY) -m pip install --quiet torch==2.13.0
	# every optional part (`all`: devices, viewer, cluster, data) plus the test and benchmark tools
	$(PY) -m pip install --quiet -e ".[dev,bench,all]"
	touch $(STAMP)

# One compute thread for the design (the same figures whatever the load; README, Set-up);
# the demo table trains its two baselines in two one-thread processes.
demo: $(STAMP)
	$(VENV)/bin/hyplex demo --out out/demo_transmission.png
	# co-design a realizable 9-filter encoder with its decoders (about 1 min)
	HYPLEX_THREADS=1 $(VENV)/bin/hyplex design --quick --out out/design
	# against RGB and the Hyplex PCA + linear baseline on held-out scenes: table + overlay PNG
	$(PY) -m hyplex.cli.demo_table --design out/design/bundle --out out/demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Random test order (pytest-randomly; its seed is printed in the header: rerun an order with
# `-p randomly --randomly-seed=N`), a per-test timeout (pyproject), one compute thread per test
# process (tests/conftest.py sets HYPLEX_THREADS=1 unless it is set).
test: $(STAMP) lint
	$(PY) -m pytest -q -p randomly

test-slow: $(STAMP)
	# pytest exits 5 when no test is marked slow: not a failure
	$(PY) -m pytest -q -m slow || [ $$? -eq 5 ]

bench-quick: $(STAMP)
	$(PY) benchmarks/rcwa.py --quick
	$(PY) benchmarks/fidelity.py --quick

bench: $(STAMP)
	$(PY) benchmarks/rcwa.py
	$(PY) benchmarks/fidelity.py

clean:
	rm -rf $(VENV) out .pytest_cache .ruff_cache
