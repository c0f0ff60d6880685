# omni: two commands on a fresh machine with Python 3.11 — `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo test lint format bench clean speech-text fusion-gl

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,whisper]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/omni fit --config configs/digits.yaml

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint fusion-gl
	$(VENV)/bin/pytest -n 2 --dist loadfile -q

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: $(STAMP)
	$(PY) benchmarks/backbone.py
	$(PY) benchmarks/masks.py
	$(PY) benchmarks/packing.py
	$(PY) benchmarks/digits.py --seeds 0 1 2
	$(PY) benchmarks/summarize.py

# The sentences speech corpus reads the King James Bible from Debian's bible-kjv (public domain text).
speech-text:
	command -v bible >/dev/null || { apt-get update -q && apt-get install -y -q bible-kjv; }

# The fusion simulator renders headless through EGL (Mesa's software driver on a CPU machine).
fusion-gl:
	ls /usr/lib/*/libEGL_mesa.so.0 >/dev/null 2>&1 || { apt-get update -q && apt-get install -y -q libegl1 libegl-mesa0 libgl1-mesa-dri; }

clean:
	rm -rf $(VENV) runs lightning_logs .pytest_cache .ruff_cache
