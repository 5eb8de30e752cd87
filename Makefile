# `make demo` and `make test` each set up everything they need on a fresh Debian machine:
# espeak-ng (speech for the demo corpus), a virtual environment in .venv, the package with its
# test and offline-transcription extras, and for the tests Debian's chromium (the page's browser test).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo_runs

.PHONY: demo test setup system-deps browser-deps clean

demo: setup
	$(BIN)/audiotext demo --out $(DEMO_DIR)

test: setup browser-deps
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

setup: system-deps $(STAMP)

# $(call apt_install,COMMAND,PACKAGE,WHY): installs PACKAGE with apt-get when COMMAND is missing.
apt_install = command -v $(1) >/dev/null 2>&1 || { \
	echo "Installing $(2) with apt-get ($(3))"; \
	SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	$$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q $(2); }

system-deps:
	@$(call apt_install,espeak-ng,espeak-ng,the demo corpus is spoken by it)

browser-deps:
	@$(call apt_install,chromium,chromium,the browser test drives it)

# Reinstall only when the dependency list changes.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e ".[test,asr]"
	touch $(STAMP)

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
