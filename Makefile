# Two entry points (see README): `make demo` and `make test`. Each sets up .venv itself.
# `make lint`: ruff and mypy, configured in pyproject.toml (CI runs it before the tests).
# `make test-fast`: the unit tier for the edit loop (tests/unit, tests/integration, tests/system: see README).
PYTHON ?= python3
VENV   := .venv
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast lint venv clean

$(STAMP): pyproject.toml
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/mmroute demo

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

# the edit loop: the unit tier only (tests/unit, under 90 s on a free core); `make test` runs all tiers
test-fast: $(STAMP)
	$(VENV)/bin/python -m pytest -q tests/unit

lint: $(STAMP)
	$(VENV)/bin/ruff check mmroute tests benchmarks examples graphs
	$(VENV)/bin/mypy mmroute

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
