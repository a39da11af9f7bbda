# Quick start: `make demo` (set up + run on sample_data/), `make test` (set up + whole suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# faiss-cpu and faiss-gpu install the same module: EXTRAS picks one (`make EXTRAS=dev,dask,gpu`).
EXTRAS ?= dev,dask,cpu
DEMO_OUT ?= demo_out

.PHONY: install browser demo test lint sample-data lock clean

$(BIN)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[$(EXTRAS)]"
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/sanitize run sample_data/digits_poisoned.parquet --out $(DEMO_OUT)
	@echo "--- against sample_data/ground_truth.csv (never read by the run) ---"
	$(BIN)/sanitize metrics $(DEMO_OUT) --truth sample_data/ground_truth.csv

lint: install
	$(BIN)/ruff check .

# Debian's Chromium + ChromeDriver for the report's browser test; installing them needs root.
browser:
	@test -x /usr/bin/chromium -a -x /usr/bin/chromedriver || { \
	  [ "$$(id -u)" = 0 ] || { echo "make browser: run as root to apt-get install chromium" >&2; exit 1; }; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; }

# SANITIZE_REQUIRE_BROWSER: under make, a missing browser fails the report test, not skips it.
test: lint browser
	SANITIZE_REQUIRE_BROWSER=1 $(BIN)/python -m pytest

sample-data: install
	$(BIN)/python sample_data/build.py

lock: install
	{ sed -n '1,3p' constraints.txt; $(BIN)/python -m pip freeze --exclude-editable; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache .ruff_cache
