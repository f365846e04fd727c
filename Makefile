# PhysioWave: two-command setup.
#   make demo      make install, then the whole pipeline on the bundled real EMG recordings (demo/run.py);
#                  DEMO_QUICK=1: 2 epochs per stage (CI), DEMO_OUTPUT=dir (default demo_output)
#   make test      make install, then run the test suite on up to TEST_WORKERS cores (pytest-xdist, one thread
#                  each; extra args: PYTEST_ARGS=...)
#   make install   install torch (only if none is importable) and physiowave[test,export], editable
#
# Python: the active virtualenv / conda env if any, else ./.venv (created on demand).
# Override with `make test PYTHON=/path/to/python`.

TORCH_VERSION := 2.13.0
SYSTEM_PYTHON := python3
VENV          := .venv
PYTEST_ARGS   ?=
TEST_WORKERS  ?= 4
DEMO_OUTPUT   ?= demo_output
DEMO_QUICK    ?=

ifneq ($(VIRTUAL_ENV),)
  PYTHON := $(VIRTUAL_ENV)/bin/python
else ifneq ($(CONDA_PREFIX),)
  PYTHON := $(CONDA_PREFIX)/bin/python
else
  PYTHON := $(VENV)/bin/python
endif

# Create ./.venv only when it is the environment in use.
VENV_DEP := $(if $(filter $(VENV)/bin/python,$(PYTHON)),$(VENV)/bin/python)

# Succeeds when nothing needs installing: torch and the dependencies import, and
# physiowave is an editable install of this checkout made after the last change
# to pyproject.toml.
define INSTALL_CHECK
import importlib.metadata as md, json, os, sys, urllib.parse, urllib.request
sys.path[:] = [p for p in sys.path if p not in ("", ".", os.getcwd())]  # skip ./physiowave.egg-info
import torch, numpy, h5py, pywt, scipy, wfdb, sklearn, tqdm, tensorboard, matplotlib, pytest, xdist, ruff
import huggingface_hub, safetensors, onnx, onnxruntime, onnxscript
dist = md.distribution("physiowave")
info = json.loads(dist.read_text("direct_url.json") or "{}")
src = urllib.request.url2pathname(urllib.parse.urlparse(info.get("url", "")).path)
assert info.get("dir_info", {}).get("editable") and os.path.samefile(src, ".")
meta = next(f for f in dist.files if f.name == "METADATA")
assert os.path.getmtime(meta.locate()) >= os.path.getmtime("pyproject.toml")
endef
export INSTALL_CHECK

.PHONY: install test demo

$(VENV)/bin/python:
	$(SYSTEM_PYTHON) -m venv $(VENV)

install: $(VENV_DEP)
	@set -e; \
	if $(PYTHON) -c "$$INSTALL_CHECK" >/dev/null 2>&1; then \
	    echo "physiowave[test,export] already installed for $(PYTHON)"; exit 0; \
	fi; \
	if ! $(PYTHON) -c "import torch" >/dev/null 2>&1; then \
	    echo "No importable torch: installing torch==$(TORCH_VERSION)"; \
	    $(PYTHON) -m pip install "torch==$(TORCH_VERSION)" || { \
	        echo "torch==$(TORCH_VERSION) is not available: falling back to the newest torch (large download)"; \
	        $(PYTHON) -m pip install torch; \
	    }; \
	fi; \
	echo "Installing physiowave[test,export] (editable); the installed torch is kept"; \
	$(PYTHON) -m pip install -e ".[test,export]"

test: install
	OMP_NUM_THREADS=1 $(PYTHON) -m pytest -q -n auto --maxprocesses $(TEST_WORKERS) --dist worksteal tests $(PYTEST_ARGS)

demo: install
	DEMO_QUICK=$(DEMO_QUICK) $(PYTHON) demo/run.py --output $(DEMO_OUTPUT)
