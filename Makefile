# The README's commands. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
# Another environment with the pinned requirements may stand in: make repro VENV=/path/to/venv
VENV ?= .venv
BIN := $(VENV)/bin
# Stages run `python -m stages.<name>`: the virtual environment's python must come first.
export PATH := $(abspath $(BIN)):$(PATH)
.DEFAULT_GOAL := help
.PHONY: help setup repro reset show exp study queue test test-quick lint clean

help:  ## List the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(BIN)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@

# `dvc plots show` and `dvc plots diff` write their page from this template, with Vega inline,
# so that it draws offline; .dvc/config.local names it (DVC's plots.html_template).
PLOTS_PAGE := $(VENV)/share/dvc-plots.html
$(PLOTS_PAGE): $(BIN)/.installed tools/plots_page.py
	$(BIN)/python -m tools.plots_page --out $@

setup: $(BIN)/.installed $(PLOTS_PAGE)  ## Create .venv/ with the pinned requirements and the offline plots page
	@grep -qs 'html_template' .dvc/config.local || $(BIN)/python -m tools.plots_page --out $(PLOTS_PAGE)

repro: setup  ## Run the pipeline: params checked first, the team's results pulled where a DVC remote is set
	python -m tools.repro repro

reset: setup  ## Back to the last commit's params and results, after dvc exp run, dvc repro or a failed stage
	python -m tools.repro reset

show: setup  ## The experiments side by side, readable at 120 columns: headline metrics and the params that differ
	dvc exp show --no-pager --only-changed --drop 'Created|step|kept_epoch|dtype|eval.loss|precision|recall'

exp: setup  ## Run one experiment of experiments.yaml in the workspace: make exp NAME=study-relu
	python -m tools.study exp "$$NAME"

study: setup  ## Run every experiment of experiments.yaml in DVC's queue, then update docs/study.md's table
	python -m tools.study run
	python -m tools.study table --readme docs/study.md

queue: setup  ## Run what dvc exp run --queue queued; fail naming every experiment that failed
	python -m tools.study queue

test: setup  ## Run every test, on every core (under 5 minutes on 2 cores)
	python -m pytest -n auto --dist loadfile

test-quick: setup  ## The tests that start no dvc and no TensorFlow process (under a minute)
	python -m pytest -n auto --dist loadfile -m "not slow"

lint: setup  ## Check style and import order with ruff, and the GitHub workflows with zizmor
	ruff check .
	ruff format --check .
	zizmor --offline .github/workflows

.PHONY: predict export
predict: setup  ## Classify your own pictures: make predict IMAGES="coat.jpg sneaker.png"
	python -m fmnist.predict $$IMAGES

export: setup  ## Write models/model.tflite (LiteRT) and models/model.onnx, each checked against Keras
	python -m fmnist.export

.PHONY: push check-lock check-pushed check-retrain review
BASE ?= main
TOLERANCE ?= 0.01
# The arguments reach commands as environment variables ("$$NAME"), taken literally: neither make
# nor the shell expands or runs what they hold. IMAGES alone is split at spaces.
override NAME := $(value NAME)
override IMAGES := $(value IMAGES)
override BASE := $(value BASE)
override TOLERANCE := $(value TOLERANCE)
export NAME IMAGES BASE TOLERANCE

push: setup  ## Send the results and the run-cache, with the outputs it records, to the DVC remote
	dvc push --run-cache
	python -m tools.dvc_api push-run-cache

check-lock: setup  ## Fail if dvc.lock is stale for params.yaml, dvc.yaml or the code (no data needed)
	python -m tools.staleness

check-pushed: setup  ## Pull the results from the DVC remote; fail naming any that were never pushed
	dvc pull --allow-missing
	python -m tools.staleness --pulled

check-retrain: setup  ## Retrain on the pulled data; fail if a metric moves more than TOLERANCE (0.01)
	dvc repro --force --downstream train
	python -m tools.retrain --tolerance "$$TOLERANCE"

review: setup  ## Write review/report.md: params, metrics and plots against BASE (default main)
	python -m tools.review --base "$$BASE" --out review

.PHONY: bench
bench: setup  ## Accuracy per CPU-minute: the study's CNN script and named experiments (~25 min on 2 cores)
	python -m bench.accuracy

clean:  ## Remove the virtual environment and caches (not the DVC cache or results)
	-@$(BIN)/python -m dvc config --local --unset plots.html_template 2>/dev/null
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
