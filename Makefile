# relate-verl: every target sets itself up on a fresh machine (creates .venv, installs into it).
#   make demo        the main job on the bundled defaults (reruns skip what is done)
#   make demo-smoke  the same pipeline at a tiny size (~2-3 min)
#   make test   the test suite (CPU only); .ci/run calls exactly this
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.relate-installed
DEMO_DIR ?= outputs/demo
DEMO_SMOKE_DIR ?= outputs/demo-smoke
PYTEST_ARGS ?=

.PHONY: install demo demo-smoke test clean help

help:
	@echo "make demo    run the main job on the bundled sample (report: $(DEMO_DIR)/report.md)"
	@echo "make demo-smoke  the same pipeline tiny (report: $(DEMO_SMOKE_DIR)/report.md, ~2-3 min)"
	@echo "make test    run the test suite on CPU"
	@echo "make install create $(VENV) and install the CPU requirements (done by demo/test)"

$(STAMP): requirements.txt requirements-nodeps.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and on its own, so the CPU build is taken (DESIGN.md section 3)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -r requirements-nodeps.txt
	$(PY) -m pip install -q --no-deps -e .
	@touch $(STAMP)

install: $(STAMP)

demo: install
	$(PY) -m examples.demo --output-dir $(DEMO_DIR)

demo-smoke: install
	$(PY) -m examples.demo --smoke --output-dir $(DEMO_SMOKE_DIR)

# pytest exits 5 when it collects no test: that is a broken suite, never a pass.
test: install
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests; failing" >&2; exit 1; fi; \
	exit $$rc

clean:
	rm -rf $(VENV) outputs .pytest_cache .hypothesis
