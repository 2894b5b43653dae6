# Two entry points for a fresh clone: `make run` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: setup run test lint browser datasets postgres

# constraints.txt pins what this project's own venv is tested with; pyproject.toml declares
# the ranges users may install.
$(BIN)/lookalike: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	# rembg imports pymatting, whose numba kernels compile on the first import (about 80 s on
	# two cores) and are cached beside it: once here, not in the first service start or test.
	$(BIN)/python -c "import rembg"
	touch $@

setup: $(BIN)/lookalike

run: setup
	$(BIN)/lookalike run

# Every test under coverage.py, the lookalike processes the tests start included; the total is
# printed at the end, after the 15 slowest tests. Two workers share the tests (each starts the
# servers its tests need).
# COVERAGE_FILE is absolute so that processes started elsewhere add to it.
test: setup browser datasets postgres
	$(BIN)/ruff check .
	rm -f .coverage .coverage.*
	COVERAGE_FILE=$(CURDIR)/.coverage $(BIN)/coverage run -m pytest -n 2 --durations=15
	COVERAGE_FILE=$(CURDIR)/.coverage $(BIN)/coverage combine --quiet
	COVERAGE_FILE=$(CURDIR)/.coverage $(BIN)/coverage report --format=total | \
	  xargs -I{} echo "line coverage: {} %"

lint: setup
	$(BIN)/ruff check .

# The UI tests drive Debian's Chromium through its ChromeDriver.
browser:
	@[ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ] || { \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium chromium-driver; }

# Fashion-MNIST items among the garments of the background-removal ground truth (tests/scenes.py).
datasets:
	@[ -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ] || { \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq dataset-fashion-mnist; }

# tests/test_postgres.py runs a real PostgreSQL server of Debian's package in a temporary folder.
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq postgresql; }
