# The README's two commands: `make demo` and `make test`. Everything they need
# is installed here, so they work on a fresh clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8000
SCALE ?= 1

.PHONY: demo test test-deps bench install db migrate seed keys serve stop-db worker reap

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed

# The embedded PostgreSQL runs only when DATABASE_URL is unset.
db: install
	@if [ -z "$$DATABASE_URL" ]; then $(PY) -m core.embedded_pg start; fi

migrate: db
	DEBUG=1 $(PY) manage.py migrate_schemas --shared --noinput
	DEBUG=1 $(PY) manage.py migrate_schemas --tenant --noinput

seed: migrate
	DEBUG=1 $(PY) manage.py seed_demo --scale $(SCALE)

# The server Render runs (gunicorn.conf.py: its worker, threads and timeouts), on this machine only.
serve:
	DEBUG=1 $(PY) -m gunicorn core.wsgi:application -c gunicorn.conf.py --bind 127.0.0.1:$(PORT)

# The platform's age identity that seals make demo's backups (var/keys/, mode 0600); production sets its own.
keys: db
	DEBUG=1 $(PY) manage.py create_platform_identity

demo: seed keys serve

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

test: db test-deps
	$(PY) -m pytest $(PYTEST_ARGS)

bench: migrate
	$(PY) bench/run.py $(BENCH_ARGS)

# A job worker, for those who configure a broker (CELERY_BROKER_URL=redis://…); without
# one, jobs run inline and no worker is needed. --beat runs the periodic reaper too.
worker: migrate
	$(PY) -m celery -A core worker --beat --loglevel=info --concurrency=$${WORKER_CONCURRENCY:-2}

reap: migrate
	$(PY) manage.py reap

stop-db: install
	$(PY) -m core.embedded_pg stop
