# Set-up and the two README commands. Everything installs into .venv/ at the repo root.
#
# TFX 1.16 declares python<3.11, but every library under it ships 3.11 wheels, so pip runs with
# --ignore-requires-python and the full pin set in constraints.txt (unpinned, pip backtracks
# for many minutes).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP_INSTALL := $(BIN)/python -m pip install --ignore-requires-python -c constraints.txt
export TF_USE_LEGACY_KERAS := 1

.PHONY: setup demo test clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) --quiet -e '.[test]'
	touch $@

# The main job end to end on scikit-learn's digits: train, validate, bless, push, serve, query.
demo: setup
	$(BIN)/siamese-tfx demo --output-dir runs/demo

# The whole test suite, one worker per core (test files are the unit of distribution, so a
# file's module fixtures are built once).
test: setup
	$(BIN)/python -m pytest -n auto --dist loadfile

clean:
	rm -rf $(VENV) runs
