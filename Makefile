# The README's two commands: `make demo` and `make test`. Everything they need
# is installed here, so they work on a fresh clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8000
SCALE ?= 1

.PHONY: demo test bench install db migrate seed serve stop-db worker reap

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

serve:
	DEBUG=1 $(PY) manage.py runserver 127.0.0.1:$(PORT)

demo: seed serve

test: db
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
