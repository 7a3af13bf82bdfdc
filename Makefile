# `make test` and `make demo` do all set-up themselves on a fresh Debian 12 machine (as root):
# system packages if missing, the virtualenv, and the two Docker Engines (Debian packages).

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# mypy refuses a directory without Python files; benchmarks/ may still be empty.
LINT_PATHS := migrate tests $(if $(wildcard benchmarks/*.py benchmarks/**/*.py),benchmarks)

.PHONY: setup system-deps venv engines lint test unit demo

setup: system-deps venv engines

# Checks capabilities rather than package names: a machine may provide python3 -m venv or
# runc some other way, and apt must not run when nothing is missing.
system-deps:
	@need=""; \
	command -v runc >/dev/null 2>&1 || need="$$need runc"; \
	command -v debootstrap >/dev/null 2>&1 || need="$$need debootstrap"; \
	command -v systemd-nspawn >/dev/null 2>&1 || need="$$need systemd-container"; \
	command -v ip >/dev/null 2>&1 || need="$$need iproute2"; \
	dpkg-query -W -f='$${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' \
		|| need="$$need busybox-static"; \
	$(PYTHON) -c 'import ensurepip, venv' >/dev/null 2>&1 || need="$$need python3-venv"; \
	if [ -n "$$need" ]; then \
		echo "installing:$$need"; \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y $$need; \
	fi

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# compat mode: a plain .pth path entry; the default finder-based editable install lets
	# `import migrate` resolve to a namespace package when run from another directory.
	$(PY) -m pip install -q -e '.[dev]' --config-settings editable_mode=compat
	touch $@

engines: venv
	$(PY) -m migrate.sandbox fetch --engine all

lint: venv
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/mypy --strict $(LINT_PATHS)
	$(VENV)/bin/lint-imports

# pytest exits 5 when nothing is selected; that is not a failure of the suite.
test: setup lint
	$(VENV)/bin/pytest -m "unit or engine or host" $(PYTEST_ARGS) || [ $$? -eq 5 ]

unit: venv
	$(VENV)/bin/pytest -m unit $(PYTEST_ARGS) || [ $$? -eq 5 ]

demo: setup
	$(PY) -m migrate.sandbox.demo
