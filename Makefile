# The README's two commands: `make demo` and `make test`. Each creates (or reuses) a local
# virtualenv and installs everything from scratch into it.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.maskrt-installed
NATIVE_SRC := $(shell find plugins -name '*.cpp' -o -name '*.h' -o -name '*.cu' -o -name 'CMakeLists.txt') CMakeLists.txt pyproject.toml

.PHONY: demo test lint install clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# torch==2.13.0 first: it resolves to the local CPU wheel; the extras then find it satisfied.
$(STAMP): $(PY) $(NATIVE_SRC)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[train,export,dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m maskrt demo

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check .

clean:
	rm -rf build $(VENV)
