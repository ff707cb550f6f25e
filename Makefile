# Two commands do all the set-up: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test install bench gpu-check clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip >/dev/null
	$(PY) -m pip install torch==2.13.0
	$(PY) -m pip install -e ".[dev,minatar,sweep,results,track]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m agents.demo

# One pytest worker per core, each test file on one worker (its module fixtures are built once).
test: $(STAMP)
	$(PY) -m pytest -q -n auto --dist loadfile

bench: $(STAMP)
	$(PY) bench/regularizer.py

# Everything the first lent GPU should measure, in under 8 minutes on one H100 (docs/paper_preset.md).
gpu-check: $(STAMP)
	$(PY) bench/gpu_check.py

clean:
	rm -rf $(VENV) runs .pytest_cache
