# `make demo` and `make test` each set up everything they need on a fresh Debian machine:
# espeak-ng (speech for the demo corpus), a virtual environment in .venv, and the package.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo_runs

.PHONY: demo test setup system-deps clean

demo: setup
	$(BIN)/audiotext demo --out $(DEMO_DIR)

test: setup
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

setup: system-deps $(STAMP)

system-deps:
	@command -v espeak-ng >/dev/null 2>&1 || { \
		echo "Installing espeak-ng with apt-get"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q espeak-ng; }

# Reinstall only when the dependency list changes.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(STAMP)

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
