PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo web test lint bench bench-peers docs docs-serve clean

$(BIN)/tickrun: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install: $(BIN)/tickrun

demo: install
	cd examples/demo && PATH="$(abspath $(BIN)):$$PATH" sh run_demo.sh

# PostgreSQL and MariaDB tests run when their servers answer (TICKRUN_TEST_POSTGRES_URL,
# TICKRUN_TEST_MYSQL_URL); tests/test_pgbouncer.py when a pgbouncer binary is installed too
# (apt-get install pgbouncer): it starts its own. Each is skipped, with the reason, otherwise.
# The demo's database, shown by the dashboard with actions on (loopback only).
web: demo
	cd examples/demo && TICKRUN_APP=jobs:app TICKRUN_DATABASE_URL=sqlite:///demo.db \
		$(abspath $(BIN))/tickrun web --allow-actions

# Test processes (pytest-xdist; 0: one process). Most tests wait on subprocesses, servers and
# leases rather than on a CPU, so two processes more than halve the suite's time on 2 cores.
# Whole files go to one process each (--dist loadfile): a file's module fixtures are set up
# once, and tests/test_partition.py's network namespaces are never made by two at once.
PYTEST_WORKERS ?= 2

# The documentation site (mkdocs.yml, docs/) into site/. --strict: a broken link or anchor, a
# page missing from the navigation or a repository file a page shows that is gone fails it.
# NO_MKDOCS_2_WARNING: the Material theme's banner about its successor, not about these docs.
MKDOCS := NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs

docs: install
	$(MKDOCS) build --strict

# http://127.0.0.1:8000/, rebuilt on every change of the docs, the code or the files they show.
docs-serve: install
	$(MKDOCS) serve

test: install
	$(BIN)/ruff check tickrun tests bench examples
	$(BIN)/ruff format --check tickrun tests bench examples
	$(BIN)/mypy
	$(MKDOCS) build --strict
	$(BIN)/python -m pytest -q -rs -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# `make bench`: tickrun's own workloads on SQLite, PostgreSQL and MariaDB (bench/README.md).
# `make bench-peers`: the same workloads side by side with pgqueuer, procrastinate, huey and
# Celery + Redis, interleaved in one run (bench/peers.py); it installs the `bench-peers` extra
# first. Options through PEERS_ARGS, e.g. PEERS_ARGS='--n 10000 --repeat 3' or '--quick'.
bench: install
	$(BIN)/python bench/bench.py

bench-peers: install
	$(BIN)/pip install --quiet -e '.[bench-peers]'
	$(BIN)/python bench/peers.py $(PEERS_ARGS)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache site
