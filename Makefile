# Two commands on a fresh clone: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-dev

.PHONY: setup demo test lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# Editable install with the dev, export, integration and openvino extras (the dev extra lists the
# integration packages too, so that the output tests always have asyncua and paho-mqtt; the OpenVINO
# tests run the real OpenVINO and NNCF). The export extra pins torch==2.13.0, the
# CPU wheel the development machines carry: it is installed first and alone so that nothing can
# resolve torch to a CUDA build (see DEVELOPERS.md).
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,export,integration,openvino]'
	touch $(STAMP)

setup: $(STAMP)

# The main job on its embedded default: camera simulator → robis-edge serve → listener, on loopback.
demo: $(STAMP)
	$(PY) examples/demo_stream.py --out demo-out/stream

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(PY) benchmarks/bench_binarize.py
	$(PY) benchmarks/bench_resize.py

clean:
	rm -rf $(VENV) build demo-out .pytest_cache .ruff_cache .hypothesis
