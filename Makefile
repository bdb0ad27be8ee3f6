# cmsdl: `make demo` and `make test` set up .venv themselves (created once, reinstalled when pyproject.toml changes).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.cmsdl-installed
PYTEST_ARGS ?=

.PHONY: help install demo test test-slow test-all bench clean

help:
	@echo "make demo       simulate workflows, train the seed's DNN, evaluate, cluster, print a summary"
	@echo "make test       install into $(VENV) and run the default (fast) test suite"
	@echo "make test-slow  the longer end-to-end tests (marked slow)"
	@echo "make bench      training-overhead benchmark: raw PyTorch loop vs cmsdl train"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(STAMP)

demo: install
	$(BIN)/python scripts/demo.py

test: install
	$(BIN)/python -m pytest -m "not slow and not gpu" $(PYTEST_ARGS)

test-slow: install
	$(BIN)/python -m pytest -m "slow and not gpu" $(PYTEST_ARGS)

test-all: test test-slow

bench: install
	$(BIN)/python scripts/bench_train_overhead.py

clean:
	rm -rf demo build dist *.egg-info .pytest_cache
