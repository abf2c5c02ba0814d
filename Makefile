# The README's commands. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Stages run `python -m stages.<name>`: the virtual environment's python must come first.
export PATH := $(abspath $(BIN)):$(PATH)
DATA_DIR := /usr/share/datasets/fashion-mnist

.DEFAULT_GOAL := help
.PHONY: help setup data repro exp study test lint clean

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

data:  ## Install Debian's dataset-fashion-mnist where possible (else fetch downloads)
	@if [ -d $(DATA_DIR) ]; then \
	  echo "data: $(DATA_DIR) is present"; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist \
	    || echo "data: apt-get could not install it; the fetch stage will download the files"; \
	elif command -v apt-get >/dev/null && sudo -n true 2>/dev/null; then \
	  sudo apt-get update -qq && sudo apt-get install -y -qq dataset-fashion-mnist \
	    || echo "data: apt-get could not install it; the fetch stage will download the files"; \
	else \
	  echo "data: no Debian package here; the fetch stage will download the files"; \
	fi

repro: setup data  ## Set everything up and run the pipeline (dvc repro; fails if the cache is full)
	python -m tools.repro

exp: setup data  ## Run one experiment of experiments.yaml in the workspace: make exp NAME=study-relu
	python -m tools.study exp $(NAME)

study: setup data  ## Run every experiment of experiments.yaml in DVC's queue, then update docs/study.md's table
	python -m tools.study run
	python -m tools.study table --readme docs/study.md

test: setup data  ## Set everything up and run the tests
	python -m pytest

lint: setup  ## Check style and import order with ruff, and the GitHub workflows with zizmor
	ruff check .
	ruff format --check .
	zizmor --offline .github/workflows

.PHONY: predict export
predict: setup  ## Classify your own pictures: make predict IMAGES="coat.jpg sneaker.png"
	python -m fmnist.predict $(IMAGES)

export: setup  ## Write models/model.tflite and check it agrees with the Keras model
	python -m fmnist.export

.PHONY: push check-lock check-pushed check-retrain review
BASE ?= main
TOLERANCE ?= 0.01

push: setup  ## Send the results and the run-cache, with the outputs it records, to the DVC remote
	dvc push --run-cache
	python -m tools.run_cache

check-lock: setup  ## Fail if dvc.lock is stale for params.yaml, dvc.yaml or the code (no data needed)
	python -m tools.staleness

check-pushed: setup  ## Pull the results from the DVC remote; fail naming any that were never pushed
	dvc pull --allow-missing
	python -m tools.staleness --pulled

check-retrain: setup  ## Retrain on the pulled data; fail if a metric moves more than TOLERANCE (0.01)
	dvc repro --force --downstream train
	python -m tools.retrain --tolerance $(TOLERANCE)

review: setup  ## Write review/report.md: params, metrics and plots against BASE (default main)
	python -m tools.review --base $(BASE) --out review

.PHONY: bench bench-pipeline
bench: setup data  ## Accuracy per CPU-minute: the study's CNN script and named experiments (~25 min on 2 cores)
	python -m bench.accuracy

bench-pipeline: setup data  ## Speed and memory of the pipeline itself (about 25 min): bench/results.json
	python -m bench.run --out bench/results.json

clean:  ## Remove the virtual environment and caches (not the DVC cache or results)
	-@$(BIN)/python -m dvc config --local --unset plots.html_template 2>/dev/null
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
