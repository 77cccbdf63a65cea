# The two commands of the README:
#   make demo   installs into .venv, then runs `dallosh demo` on embedded defaults
#   make test   installs into .venv, then runs the whole test suite (it starts and
#               stops its own Kafka broker; nothing else needs to be running)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-tools clean-venv

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required (found " + sys.version.split()[0] + ")")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

install: $(STAMP)

demo: install
	$(BIN)/dallosh demo

test: install test-tools
	$(BIN)/python -m pytest

# promtool (Debian package `prometheus`) checks the Prometheus alert rules. Installed
# here when missing and we may (root with apt-get, as in CI); otherwise those tests say
# they were skipped because promtool is absent.
test-tools:
	@command -v promtool >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "Installing promtool (Debian package prometheus)..."; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	  else echo "note: promtool not found (apt-get install prometheus); its tests will be skipped"; fi; }

clean-venv:
	rm -rf $(VENV)
