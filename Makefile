# The README's commands. `make demo` and `make test` do all set-up on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast lint format docs bench bench-search clean psql

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test,ray]'
	touch $(STAMP)

demo: install
	$(VENV)/bin/jammi-sql demo

# Tests run on every core (pytest-xdist; tests/conftest.py gives each worker its share of torch's
# threads): 87 s instead of 156 s on 2 cores. TEST_WORKERS=0 runs them in one process.
TEST_WORKERS ?= auto

test: install psql
	$(PY) -m pytest -q -n $(TEST_WORKERS) -m "not ray"
	$(PY) -m pytest -q -m ray  # Ray's tests in a process of their own, one local Ray at a time

test-fast: install psql
	$(PY) -m pytest -q -n $(TEST_WORKERS) -m "not slow and not ray"

# tests/test_server.py drives the real psql; without it (and without root) those tests skip
psql:
	@command -v psql >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
		apt-get install -y -qq postgresql-client >/dev/null; } || \
		echo "psql is not installed and this is not root: the psql tests will skip"

lint: install
	$(VENV)/bin/ruff check jammi_sql tests benchmarks
	$(VENV)/bin/ruff format --check jammi_sql tests benchmarks

format: install
	$(VENV)/bin/ruff format jammi_sql tests benchmarks
	$(VENV)/bin/ruff check --fix jammi_sql tests benchmarks

docs: install
	$(PY) tests/test_docs.py

bench: install
	$(PY) -m pip install -q -c constraints.txt -e '.[test,ray,bench]'
	$(PY) benchmarks/embed_throughput.py
	$(PY) benchmarks/eval_speed.py
	$(PY) benchmarks/finetune_speed.py
	$(PY) benchmarks/train_step.py
	$(PY) benchmarks/quality.py
	$(PY) benchmarks/server_load.py
	$(PY) benchmarks/hybrid.py
	bash benchmarks/peer_venv.sh
	$(PY) benchmarks/search_scale.py

# search at 100k and 1M vectors beside numpy, LanceDB and DuckDB's vss (in .venv-peers)
bench-search: install
	bash benchmarks/peer_venv.sh
	$(PY) benchmarks/hybrid.py
	$(PY) benchmarks/search_scale.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
