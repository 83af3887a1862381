# The README's two commands: `make demo` and `make test`. Everything else is set up by them.
VENV ?= .venv
PY := $(VENV)/bin/python
SERVE ?= 1
export PYTHONUNBUFFERED := 1
# Offline machines: Prefect's temporary server would log a failed telemetry call on every run.
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false

.PHONY: demo test bench bench-full install install-test chromium clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed pyproject.toml
	$(PY) -m pip install --quiet -e '.[test,clip,dask]'
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --silent
	touch $@

install: $(VENV)/.installed

# Browser tests drive Debian's chromium; never a browser that a tool downloads.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = "0" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium is missing: run 'sudo apt-get install chromium' (browser tests will be skipped)"; fi; }

install-test: $(VENV)/.installed-test node_modules/.installed chromium

demo: install
	$(VENV)/bin/curation demo
	@if [ "$(SERVE)" = "1" ]; then $(VENV)/bin/curation viewer; fi

test: install-test
	$(PY) -m pytest -q

# Quick sizes by default; `make bench-full` runs the sizes docs/benchmarks.md come from (about 2 hours).
bench: install
	@for f in bench/*.py; do [ "$$f" = bench/support.py ] && continue; echo "== $$f"; $(PY) $$f || exit 1; done

bench-full: install
	$(PY) bench/bench_decode_floor.py --n 10000
	$(PY) bench/bench_pipeline.py --n 10000
	$(PY) bench/bench_azure.py --n 10000
	$(PY) bench/bench_step_costs.py --n 200 --repeat 3
	$(PY) bench/bench_memory.py --n 10000 100000
	$(PY) bench/bench_analytics.py --n 100000 1000000
	$(PY) bench/bench_sampling.py --full
	$(PY) bench/bench_dashboard.py --images 100000 1000000
	$(PY) bench/bench_viewer_page.py --images 100000 --repeat 3 --hovers 20
	$(PY) bench/bench_features.py --n 200 --repeat 5
	$(PY) bench/bench_results.py --n 2000 10000 100000 --repeat 1

clean:
	rm -rf $(VENV) node_modules
