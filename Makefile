# Two commands do everything: `make demo` and `make test`. Both create .venv and install segarena into it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The real datasets: $SEGARENA_DATA_ROOT if set, else ../shared/data when it exists, else segarena's cache
# (where `make demo` downloads Kvasir-SEG when the network allows: it passes --download).
SEGARENA_DATA_ROOT ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),)
export SEGARENA_DATA_ROOT
RESULTS ?= results/demo

.PHONY: demo test test-slow install clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/segarena demo --download --results $(RESULTS)

# the fast tier (~10 min on 2 cores); `test-slow` runs the rest (whole-zoo sweeps, big models), CI runs both
test: $(VENV)/.installed
	HF_HUB_OFFLINE=1 SEGARENA_OFFLINE=1 $(PY) -m pytest -n 2 -q -m "not slow"

test-slow: $(VENV)/.installed
	HF_HUB_OFFLINE=1 SEGARENA_OFFLINE=1 $(PY) -m pytest -n 2 -q -m slow

clean:
	rm -rf $(VENV) results .pytest_cache
