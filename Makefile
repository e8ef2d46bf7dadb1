# relate-verl: every target sets itself up on a fresh machine (creates .venv, installs into it).
#   make demo        the main job on the bundled defaults (reruns skip what is done)
#   make demo-smoke  the same pipeline at a tiny size (~2-3 min)
#   make test   the test suite (CPU only); .ci/run calls exactly this
#   make check-gpu-deps  pip's resolver over requirements-gpu.txt for the GPU machine, wheels only, installing nothing
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.relate-installed
DEMO_DIR ?= outputs/demo
DEMO_SMOKE_DIR ?= outputs/demo-smoke
PYTEST_ARGS ?=
# Data for the tests, not installed: trl 1.10.0's wheel ships the real Qwen3 chat template
# (trl/chat_templates/qwen3.jinja), read out of the zip by tests/recipe/relate/test_preflight.py.
TRL_WHEEL := $(VENV)/wheels/trl-1.10.0-py3-none-any.whl
GPU_DEPS_REPORT ?= $(VENV)/gpu-deps-report.json

.PHONY: install demo demo-smoke test check-gpu-deps clean help

help:
	@echo "make demo    run the main job on the bundled sample (report: $(DEMO_DIR)/report.md)"
	@echo "make demo-smoke  the same pipeline tiny (report: $(DEMO_SMOKE_DIR)/report.md, ~2-3 min)"
	@echo "make test    run the test suite on CPU"
	@echo "make install create $(VENV) and install the CPU requirements (done by demo/test)"
	@echo "make check-gpu-deps  resolve requirements-gpu.txt with pip, wheels only (--dry-run: nothing is installed)"

$(STAMP): requirements.txt requirements-nodeps.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and on its own, so the CPU build is taken (a plain `pip install -r` would pull the CUDA build)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -r requirements-nodeps.txt
	# compat: the repository root on sys.path (a .pth), so our regular `recipe` package wins over the
	# namespace folder `recipe/` that the TransferQueue wheel installs into site-packages, from any folder
	# and in Ray workers (the default editable finder runs after that folder is found; tests/test_install.py)
	$(PY) -m pip install -q --no-deps -e . --config-settings editable_mode=compat
	@touch $(STAMP)

# A download, never an install: trl in the venv changes verl's workers (verl/models/transformers/monkey_patch.py:352-356).
$(TRL_WHEEL): | $(STAMP)
	$(PY) -m pip download -q --no-deps trl==1.10.0 -d $(VENV)/wheels

install: $(STAMP) $(TRL_WHEEL)

demo: install
	$(PY) -m examples.demo --output-dir $(DEMO_DIR)

demo-smoke: install
	$(PY) -m examples.demo --smoke --output-dir $(DEMO_SMOKE_DIR)

# pytest exits 5 when it collects no test: that is a broken suite, never a pass.
test: install
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests; failing" >&2; exit 1; fi; \
	exit $$rc

# pip's resolver over the whole GPU set for the GPU machine (CPython 3.12, Linux x86_64), installing nothing:
# `pip install --dry-run --only-binary=:all: --report` (relate_tools/gpu_requirements.py resolve_gpu_set). Wheels only,
# so a line that would be compiled at install (an sdist such as flash-attn 2.8.3 from the index) fails here,
# named, with what to do; the report is then checked against every pin and the CUDA build of each prebuilt wheel.
check-gpu-deps: install
	$(PY) -m relate_tools.gpu_requirements gpu-deps requirements-gpu.txt --report $(GPU_DEPS_REPORT)

clean:
	rm -rf $(VENV) outputs .pytest_cache .hypothesis
