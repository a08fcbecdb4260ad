# Two entry points (see README): `make demo` and `make test`. Each sets up .venv itself.
# `make lint`: ruff and mypy, configured in pyproject.toml (CI runs it before the tests).
PYTHON ?= python3
VENV   := .venv
STAMP  := $(VENV)/.installed

.PHONY: demo test lint venv clean

$(STAMP): pyproject.toml
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/mmroute demo

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check mmroute tests benchmarks examples graphs
	$(VENV)/bin/mypy mmroute

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
