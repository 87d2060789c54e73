# Two commands: `make book` (execute every chapter, build the HTML) and `make test`.
# Each sets up .venv with the pinned stack on first use.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)
STAMP := $(VENV)/.robustvae-installed
CHAPTERS := $(sort $(wildcard book/[0-9][0-9]_*.md))
NOTEBOOKS := $(CHAPTERS:.md=.ipynb)
NBVAL_FLAGS := --nbval --nbval-current-env --nbval-cell-timeout=1800 \
               --nbval-sanitize-with tests/nbval_sanitize.cfg

.PHONY: setup book notebooks html test unit nbval html-strict clean
.DEFAULT_GOAL := book

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[book,test]'
	@touch $(STAMP)

setup: $(STAMP)

## Execute every chapter in place (outputs kept in the .ipynb), then build the HTML.
book: notebooks html

notebooks: $(STAMP)
	@for md in $(CHAPTERS); do \
	  nb=$${md%.md}.ipynb; \
	  echo "== executing $$nb"; \
	  jupytext --sync --quiet $$md; \
	  papermill --cwd book --kernel python3 --log-level WARNING $$nb $$nb; \
	done

html: $(STAMP)
	jupyter-book build book/
	@echo "The book is at $(abspath book/_build/html/index.html)"

## Unit tests, the stored outputs of every chapter re-executed and compared, a strict build.
test: unit nbval html-strict

unit: $(STAMP)
	pytest tests

nbval: $(STAMP)
	pytest $(NBVAL_FLAGS) $(NOTEBOOKS)

html-strict: $(STAMP)
	jupyter-book build -W -n --keep-going book/

clean:
	rm -rf book/_build
