# cmsdl: `make demo` and `make test` set up .venv themselves (created once, reinstalled when pyproject.toml changes),
# with every extra: `make install TORCH_INDEX=https://download.pytorch.org/whl/cpu` takes CPU-only torch.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.cmsdl-installed
PYTEST_ARGS ?=
# an extra package index for torch, e.g. https://download.pytorch.org/whl/cpu (CPU-only wheels: ~1.8 GB, not 6.5 GB)
TORCH_INDEX ?=

.PHONY: help install xrootd-server java demo test test-slow test-all bench clean

help:
	@echo "make demo       simulate workflows, train the seed's DNN, evaluate, cluster, print a summary"
	@echo "make test       install into $(VENV) and run the default (fast) test suite"
	@echo "make test-slow  the longer end-to-end tests (marked slow)"
	@echo "make bench      every scripts/bench_*.py in its small configuration (<= 10 min on 2 cores), one table"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# .[dev]: the base install and every extra (train, tools, remote, k8s, tracking, spark, optuna, xgboost) + test tools
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) -e '.[dev]'
	touch $@

install: $(STAMP) xrootd-server java

# The root:// tests (tests/test_remote.py) run a real xrootd on loopback; they are skipped where it is missing.
xrootd-server:
	@if command -v xrootd >/dev/null 2>&1; then echo "xrootd-server: $$(command -v xrootd) is installed"; \
	elif [ "$$(id -u)" != 0 ]; then echo "xrootd-server: not root, not installing it (root:// tests will be skipped)"; \
	elif ! command -v apt-get >/dev/null 2>&1; then echo "xrootd-server: no apt-get, not installing it (root:// tests will be skipped)"; \
	else echo "xrootd-server: installing with apt-get"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq xrootd-server; fi

# engine=spark (pyspark 4) needs a Java runtime; the Spark tests are skipped where it is missing.
java:
	@if command -v java >/dev/null 2>&1; then echo "java: $$(command -v java) is installed"; \
	elif [ "$$(id -u)" != 0 ]; then echo "java: not root, not installing it (Spark tests will be skipped)"; \
	elif ! command -v apt-get >/dev/null 2>&1; then echo "java: no apt-get, not installing it (Spark tests will be skipped)"; \
	else echo "java: installing openjdk-17-jre-headless with apt-get"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless; fi

demo: install
	$(BIN)/python scripts/demo.py

test: install
	$(BIN)/python -m pytest -m "not slow and not gpu" $(PYTEST_ARGS)

test-slow: install
	$(BIN)/python -m pytest -m "slow and not gpu" $(PYTEST_ARGS)

test-all: test test-slow

bench: install
	$(BIN)/python scripts/bench_all.py

clean:
	rm -rf demo build dist *.egg-info .pytest_cache
