# The two set-up commands are `make demo` and `make test`; both build .venv themselves.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# reinstalled when pyproject.toml or __version__ changes (the installed metadata's version
# is read from genbuffer/__init__.py at install time; tests/test_release.py compares them)
STAMP := $(VENV)/.installed-$(shell (cat pyproject.toml; grep '^__version__' genbuffer/__init__.py) | cksum | cut -d' ' -f1)

.PHONY: venv demo test test-rest test-all test-fast test-lowest lint dist docs format bench chaos chaos-cluster clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $@

demo: venv
	$(PY) scripts/demo.py

# make test: the unit tests, the embedded backend and the real Redis + PostgreSQL, on both
# cores (each xdist worker starts its own redis-server; tests/support/urls.py).
# make test-rest: what it leaves out (subprocess and chaos runs, the wheel build,
# MariaDB, the Redis Cluster, PgBouncer); make test-all: everything (make test, then
# make test-rest, then the state machine at full size). CI runs test-all and test-lowest.
PYTEST_WORKERS ?= 2
FAST := not slow and not mariadb and not cluster and not pgbouncer
test: venv
	$(PY) -m pytest -n $(PYTEST_WORKERS) -m "$(FAST)"

test-rest: venv
	$(PY) -m pytest -n $(PYTEST_WORKERS) -m "not ($(FAST))"

# the full-size state machine runs one seed (CI reproducible); a hunt of your own:
# make test-all STATE_MACHINE_SEED=$$RANDOM, or STATE_MACHINE_EXAMPLES=1000 pytest …
STATE_MACHINE_FULL ?= 200
STATE_MACHINE_SEED ?= 20261206
test-all: test test-rest
	STATE_MACHINE_EXAMPLES=$(STATE_MACHINE_FULL) $(PY) -m pytest -n $(PYTEST_WORKERS) \
		--hypothesis-seed=$(STATE_MACHINE_SEED) tests/test_state_machine.py -k test_compaction_state_machine

# The Redis, CLI, metrics and offload tests again on the lowest versions allowed of redis-py,
# typer, prometheus-client, obstore and zstandard.
LOWEST_TESTS := tests/test_buffer.py tests/test_push_paths.py tests/test_scripts.py tests/test_faults.py \
	tests/test_process.py tests/test_cli.py tests/test_compaction.py tests/test_metrics.py \
	tests/test_offload.py tests/test_packer.py
test-lowest:
	$(PYTHON) -m venv .venv-lowest
	.venv-lowest/bin/python -m pip install --quiet --upgrade pip
	.venv-lowest/bin/python -m pip install --quiet -e '.[dev]' -c .ci/lowest.txt
	.venv-lowest/bin/python -m pip freeze | grep -iE '^(redis|typer|prometheus.client|obstore|zstandard)=='
	@# fail unless each pin of .ci/lowest.txt is what was installed (a resolver that picked another version is no lowest test)
	.venv-lowest/bin/python -c "import sys, importlib.metadata as m; pins = [line.split('==') for line in open('.ci/lowest.txt') if '==' in line and not line.startswith('#')]; bad = [(n.strip(), v.strip(), m.version(n.strip())) for n, v in pins if m.version(n.strip()) != v.strip()]; sys.exit(f'not the lowest versions (name, pinned, installed): {bad}' if bad else 0)"
	.venv-lowest/bin/python -m pytest -q -n $(PYTEST_WORKERS) $(LOWEST_TESTS)

test-fast: venv
	$(PY) -m pytest -m "not slow" -x

# lint fails when docs/cli.md or docs/settings.md is stale (a help text or a Settings
# description changed): `make docs` regenerates them.
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(PY) scripts/gen_docs.py --check

docs: venv
	$(PY) scripts/gen_docs.py

# dist/: the sdist and the wheel, built with the venv's setuptools (no isolated build env,
# nothing downloaded), and their metadata checked as PyPI would (README rendering included).
dist: venv
	rm -rf dist && $(PY) -m build --no-isolation --outdir dist .
	$(VENV)/bin/twine check --strict dist/*

# genbuf's modules compiled first, as `pip install` compiles them: the editable install
# leaves them as source, which every process compiles again when bytecode is not written
# (PYTHONDONTWRITEBYTECODE), ~0.1 s of each command in section 7
bench: venv
	$(PY) -m compileall -q genbuffer
	$(PY) bench/run.py

chaos: venv
	$(PY) -m tests.chaos --chunks 5000 --generations 20 --kills 50 --duration 60

# six Redis Cluster nodes, three workers killed and restarted, primaries failed over
chaos-cluster: venv
	$(PY) -m tests.chaos_cluster --generations 200 --chunks 30 --kills 10 --failovers 4 --duration 60

format: venv
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) .venv-lowest storage .pytest_cache .mypy_cache .ruff_cache .hypothesis
