# The two commands: `make run` (a local demo on SQLite) and `make test` (the whole suite).
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
FLASK   := $(VENV)/bin/flask --app app
STAMP   := $(VENV)/.installed-stamp
DEMO_ADMIN ?= admin@example.com
HOST    ?= 127.0.0.1
PORT    ?= 5000
# The printed sign-in link points where `make run` serves.
BASE_URL ?= http://$(HOST):$(PORT)
export BASE_URL

.PHONY: install run lint test test-sqlite test-postgresql vendor clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(FLASK) db upgrade
	@if [ ! -f instance/.demo-seeded ]; then \
		$(FLASK) demo && touch instance/.demo-seeded; \
	fi
	@$(FLASK) users create-admin $(DEMO_ADMIN) >/dev/null
	@echo
	@$(FLASK) users sign-in-link $(DEMO_ADMIN)
	@echo
	$(FLASK) run --host $(HOST) --port $(PORT)

# The layers contract (pyproject.toml: a module imports only from below, so no cycles) and ruff.
lint: install
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Lint first; then SQLite always, PostgreSQL too when TEST_DATABASE_URL is set (.ci/run sets it).
# The browser tests (tests/e2e) run once: in the PostgreSQL pass when there is one, else with
# SQLite. Every other test runs on both databases. With both, the two passes run side by side
# (one per core; each has its own database) and the SQLite pass's report follows the other's.
SQLITE_MARKERS ?= not postgresql
SQLITE_LOG ?= $(VENV)/test-sqlite.log
test: lint
	@if [ -n "$$TEST_DATABASE_URL" ]; then \
		$(MAKE) --no-print-directory test-sqlite SQLITE_MARKERS="not postgresql and not e2e" > $(SQLITE_LOG) 2>&1 & sqlite=$$!; \
		$(MAKE) --no-print-directory test-postgresql; postgresql=$$?; \
		wait $$sqlite; sqlite_status=$$?; \
		echo "--- the SQLite pass ---"; cat $(SQLITE_LOG); \
		echo "SQLite pass: exit $$sqlite_status; PostgreSQL pass: exit $$postgresql"; \
		[ $$sqlite_status -eq 0 ] && [ $$postgresql -eq 0 ]; \
	else $(MAKE) test-sqlite && echo "TEST_DATABASE_URL is not set: the PostgreSQL pass was not run"; fi

test-sqlite: install
	env -u TEST_DATABASE_URL $(PY) -m pytest -m "$(SQLITE_MARKERS)" $(PYTEST_ARGS)

test-postgresql: install
	@test -n "$$TEST_DATABASE_URL" || { echo "set TEST_DATABASE_URL"; exit 2; }
	$(PY) -m pytest $(PYTEST_ARGS)

# Re-take the vendored front-end files from the npm registry (versions in the file names).
vendor:
	rm -rf build/vendor && mkdir -p build/vendor
	cd build/vendor && npm pack --silent htmx.org@2.0.11 @picocss/pico@2.1.1 >/dev/null
	cd build/vendor && for f in *.tgz; do mkdir -p "$${f%.tgz}" && tar xzf "$$f" -C "$${f%.tgz}"; done
	cp build/vendor/htmx.org-2.0.11/package/dist/htmx.min.js static/vendor/htmx-2.0.11.min.js
	cp build/vendor/picocss-pico-2.1.1/package/css/pico.min.css static/vendor/pico-2.1.1.min.css

clean:
	rm -rf $(VENV) build .pytest_cache
