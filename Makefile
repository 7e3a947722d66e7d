# Two entry points for a newcomer (see README.md): `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# torch is not needed by the core; tests use it (real torch.OutOfMemoryError, device detection).
# On our CPU machines `pip install torch==2.13.0` takes the CPU build from local disk.
TORCH  ?= torch==2.13.0

.PHONY: demo test gpu-check lint install-core install-dev clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.core: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.dev: pyproject.toml spec/conformance/pyproject.toml spec/example-plugin/pyproject.toml plugins/wav2lip/pyproject.toml plugins/memory/pyproject.toml plugins/latentsync/pyproject.toml plugins/infinitetalk/pyproject.toml plugins/silero_vad/pyproject.toml plugins/demucs/pyproject.toml plugins/syncnet/pyproject.toml integrations/runpod/pyproject.toml integrations/pipecat/pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[dev,serve,ray,live]' -e spec/conformance -e spec/example-plugin -e plugins/wav2lip -e plugins/memory -e 'plugins/latentsync[test]' -e plugins/infinitetalk -e plugins/silero_vad -e plugins/demucs -e 'plugins/syncnet[test]' -e integrations/runpod -e integrations/pipecat
	touch $@ $(VENV)/.core

install-core: $(VENV)/.core
install-dev: $(VENV)/.dev

demo: $(VENV)/.core
	$(BIN)/lipkit run tests/media/face.mp4 tests/media/speech.wav -o out.mp4

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: $(VENV)/.dev
	$(BIN)/python -m pytest -q -n 2 -m "not gpu" tests

# every backend at full size on a CUDA GPU against its own fp32 run (tests/gpu/gpu_check.py);
# LIPKIT_GPU_CHECK_DEVICE=cpu runs the same code at tiny sizes, as CI does
gpu-check: $(VENV)/.dev
	$(BIN)/python -m pytest -q -s -p no:xdist -m gpu tests/gpu

clean:
	rm -rf $(VENV) out.mp4
