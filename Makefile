# Set-up and checks. `make demo` runs a real search on the built-in digits data (CPU, a few
# minutes); `make test` runs the linters and the whole test suite. Both create .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install install-dev system-deps demo test lint bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# constraints.txt pins the CPU build of torch; without it pip pulls a multi-GB CUDA build.
# The report and export extras (matplotlib, onnx, onnxruntime: about 160 MB beside torch's
# 700 MB) come too: the demo's next commands (`report`, `export --format onnx`) need them.
install: $(BIN)/python
	$(BIN)/pip install -q -c constraints.txt -e ".[report,export]"

install-dev: $(BIN)/python
	$(BIN)/pip install -q -c constraints.txt -e ".[dev]"

# Graphviz draws block diagrams; Chromium checks the HTML report in the tests.
system-deps:
	@if ! command -v dot >/dev/null || ! command -v chromium >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && apt-get install -y -qq graphviz chromium >/dev/null; \
	  else echo "install graphviz and chromium (apt-get) for the diagram and report tests"; fi; \
	fi

demo: install
	$(BIN)/blockqnn search --config examples/digits.toml --run-dir runs/demo-$$(date +%Y%m%d-%H%M%S)

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: install-dev system-deps lint
	$(BIN)/python -m pytest -q --timeout=600
