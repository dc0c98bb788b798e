# cctv-cluster: two commands on a fresh machine.
#   make run    the main job on the embedded default (local Ray, local S3, Serve apps, demo cameras)
#   make test   venv + system packages + footage, then lint and the whole test suite
# Extra arguments for the job: make run ARGS="--duration 120 --cameras 8"

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
CACHE  ?= .cache
ARGS   ?=
PYTEST_ARGS ?=

export RAY_USAGE_STATS_ENABLED ?= 0

.PHONY: run test lint rules-check venv system-deps footage bench bench-gpu clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

# Debian packages the tests and the camera simulator use (scripts/debian-packages.txt):
# Prometheus server + promtool, GStreamer's RTSP server with python3-gi for /usr/bin/python3.
system-deps:
	@missing=$$(for p in $$(grep -v '^#' scripts/debian-packages.txt); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:" $$missing; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

# vtest.avi from Debian's opencv-doc, then every clip converted once to H.264 with a 1 s GOP.
footage: venv
	scripts/fetch_vtest.sh $(CACHE)/footage
	$(VENV)/bin/cctv footage prepare --cache-dir $(CACHE)

# The demo's cameras are RTSP streams from the GStreamer simulator: its Debian packages come first.
# Where they cannot be installed (no root, no apt), the job still runs and says, in its banner,
# that its cameras are files looped directly.
run: venv footage
	@$(MAKE) --no-print-directory system-deps || \
	  echo "make run: the RTSP simulator's Debian packages could not be installed (above); cameras will be files"
	$(VENV)/bin/cctv run $(ARGS)

lint: venv
	$(VENV)/bin/ruff check .

# Alerting rules: syntax (promtool check) and their unit tests (promtool test), docs/METRICS.md.
rules-check: system-deps
	promtool check rules configs/prometheus/alerts.yml
	promtool test rules configs/prometheus/alerts_test.yml

test: venv system-deps footage lint rules-check
	PYTHONFAULTHANDLER=1 $(PY) -m pytest $(PYTEST_ARGS)

# The benchmarks on this machine (775 s measured on the 2-core box; results and plots in BENCH_OUT),
# then the README's performance list regenerated from them and printed.
BENCH_OUT ?= benchmarks/results
bench: venv footage
	@start=$$(date +%s); \
	$(PY) -m benchmarks.performance.ingest --quick --out $(BENCH_OUT) && \
	$(PY) -m benchmarks.performance.ingest_rtsp --cameras 50 --out $(BENCH_OUT) && \
	$(PY) -m benchmarks.performance.inference --quick --out $(BENCH_OUT) && \
	$(PY) -m benchmarks.performance.backends --out $(BENCH_OUT) && \
	$(PY) -m benchmarks.performance.e2e --resolution 360p --counts 32 40 48 --baseline-counts 32 40 48 --out $(BENCH_OUT) && \
	$(PY) -m benchmarks.performance.api --out $(BENCH_OUT) && \
	if [ "$(BENCH_OUT)" = benchmarks/results ]; then $(PY) -m benchmarks.report; \
	else $(PY) -m benchmarks.report --results $(BENCH_OUT) --print-only; fi && \
	echo "make bench: $$(( $$(date +%s) - start )) s wall, results in $(BENCH_OUT)"

# GPU node benchmark (issue 9; no Ray there): bundles the detector from MODELS_DIR (outside the repo,
# so it cannot travel by itself), two looped streams and the wheels the node lacks (PyAV, pydantic)
# under $(CACHE)/gpu-bundle, checks the 64 MiB device limit and prints the device `run` call.
MODELS_DIR ?= ../shared/models
bench-gpu: venv footage
	$(PY) -m benchmarks.gpu.run_all prepare --bundle $(CACHE)/gpu-bundle --models-dir $(MODELS_DIR) \
	  --streams $(CACHE)/streams

clean:
	rm -rf state .pytest_cache .ruff_cache
