# The README's two commands: `make demo` and `make test`. Each creates (or reuses) a local
# virtualenv and installs everything from scratch into it.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.maskrt-installed
NATIVE_SRC := $(shell find plugins runtime/native -name '*.cpp' -o -name '*.h' -o -name '*.cu' -o -name 'CMakeLists.txt') CMakeLists.txt pyproject.toml

# `make sanitize`: maskrt._native and maskrt._core built with AddressSanitizer + UBSan
# (CMake option MASKRT_SANITIZE) into $(ASAN_DIR)/lib, then the native tests run against them:
# tests/conftest.py imports the modules of MASKRT_NATIVE_DIR in place of the installed ones.
# libasan is preloaded (Python itself is not instrumented), with libstdc++ (ASan intercepts
# __cxa_throw, which must be loaded when it starts: python does not link libstdc++); leak
# detection is off because the interpreter keeps its allocations until exit by design. The
# compiler that builds is the one whose libasan is preloaded ($(CXX)). --capture=sys: a sanitizer
# report (written to fd 2, then the process exits) reaches the terminal instead of pytest's
# capture file. -k 'not gil': the GIL-release tests are timing tests on large inputs (slow under
# ASan, and they check no memory access the other tests do not).
ASAN_DIR   := build/asan
ASAN_TESTS := tests/test_properties.py tests/test_native_core.py tests/test_batched_nms.py tests/test_pyramid_roi_align.py
ASAN_GEN   := $(if $(shell command -v ninja 2>/dev/null),-G Ninja)
JOBS       := $(shell nproc 2>/dev/null || echo 2)
# `make test`: pytest-xdist workers (TEST_JOBS=1: one process). --dist loadfile keeps each test
# module in one worker, so module-scoped fixtures are built once; session fixtures (the exported
# default model) once per worker. Tests use tmp_path and free ports only, so workers cannot collide.
TEST_JOBS  ?= 2

.PHONY: demo test lint install clean sanitize

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# torch==2.13.0 first: it resolves to the local CPU wheel; the extras then find it satisfied.
# nvidia-pytriton without its dependencies: only its bundled tritonserver is used, and its numpy<2
# pin would downgrade numpy under opencv 5.
$(STAMP): $(PY) $(NATIVE_SRC)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[train,export,dev]'
	$(PY) -m pip install -q --no-deps nvidia-pytriton==0.7.0  # tritonserver 2.51 for the Triton tests (see pyproject)
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m maskrt demo

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -q $(if $(filter-out 1,$(TEST_JOBS)),-n $(TEST_JOBS) --dist loadfile)
	$(MAKE) --no-print-directory sanitize

# -O1 -g1: the usual sanitizer build (line numbers in reports), and half the compile time of -O2.
sanitize: $(STAMP)
	@test -f "$$($(CXX) -print-file-name=libasan.so)" || { echo "sanitize: $(CXX) has no libasan.so" >&2; exit 1; }
	@mkdir -p $(ASAN_DIR)
	cmake -S . -B $(ASAN_DIR) $(ASAN_GEN) -DMASKRT_PYTHON=ON -DMASKRT_SANITIZE=ON \
	  -DCMAKE_CXX_COMPILER=$(CXX) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO='-O1 -g1' \
	  -DCMAKE_LIBRARY_OUTPUT_DIRECTORY=$(abspath $(ASAN_DIR))/lib \
	  -DPython_EXECUTABLE=$(abspath $(PY)) -Dpybind11_DIR="$$($(PY) -m pybind11 --cmakedir)" > $(ASAN_DIR)/configure.log 2>&1 \
	  || { cat $(ASAN_DIR)/configure.log >&2; exit 1; }
	cmake --build $(ASAN_DIR) --target _native _core -j $(JOBS)
	LD_PRELOAD="$$($(CXX) -print-file-name=libasan.so) $$($(CXX) -print-file-name=libstdc++.so.6)" \
	  ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	  MASKRT_NATIVE_DIR=$(abspath $(ASAN_DIR))/lib $(PY) -m pytest -q -p no:cacheprovider --capture=sys \
	  -k 'not gil' $(ASAN_TESTS)

lint: $(STAMP)
	$(PY) -m ruff check .

clean:
	rm -rf build $(VENV)
