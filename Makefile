# Two commands do everything (see README):
#   make run    start the server on ws://127.0.0.1:8145/ws (ARGS="--port 9000" to pass flags)
#   make test   run the whole test suite (Python, browser and JS unit tests)
# Both create .venv and install the pinned requirements on first use.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# Re-install whenever requirements.txt changes.
STAMP  := $(VENV)/.installed-$(shell cat requirements.txt | cksum | cut -d' ' -f1)

.PHONY: run test bench deps

run: $(STAMP)
	$(PY) ws_server.py $(ARGS)

test: $(STAMP)
	scripts/ensure-test-tools.sh
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) benchmarks/bench.py $(ARGS)

deps: $(STAMP)

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	rm -f $(VENV)/.installed-* && touch $@
