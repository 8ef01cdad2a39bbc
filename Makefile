# Two commands for a new user: `make run` and `make test`. Everything else is for developers.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint bench clean

$(BIN)/strongroom: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.dev: pyproject.toml $(BIN)/strongroom
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

run: $(BIN)/strongroom
	$(BIN)/strongroom db upgrade
	$(BIN)/strongroom merchants demo
	$(BIN)/strongroom serve --host 127.0.0.1 --port 8000

test: $(VENV)/.dev
	$(BIN)/pytest

lint: $(VENV)/.dev
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy src

bench: $(VENV)/.dev
	bash bench/run.sh

clean:
	rm -rf $(VENV) var
