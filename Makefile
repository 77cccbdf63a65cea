# The two commands of the README:
#   make demo   installs into .venv, then runs `dallosh demo` on embedded defaults
#   make test   installs into .venv, then runs the whole test suite (it starts and
#               stops its own Kafka broker; nothing else needs to be running)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test clean-venv

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required (found " + sys.version.split()[0] + ")")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

install: $(STAMP)

demo: install
	$(BIN)/dallosh demo

test: install
	$(BIN)/python -m pytest

clean-venv:
	rm -rf $(VENV)
