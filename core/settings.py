"""Settings, all from the environment (django-environ). See README "Configuración"."""
from datetime import timedelta
from pathlib import Path
from urllib.parse import unquote

import environ

from core import embedded_pg
from core.storage_settings import storages_setting

BASE_DIR = Path(__file__).resolve().parent.parent
env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env("SECRET_KEY", default="") or (
    "dev-only-insecure-key-never-used-in-production-0123456789abcdef" if DEBUG else ""
)
if not SECRET_KEY:
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured("SECRET_KEY es obligatorio cuando DEBUG está desactivado.")

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", ".localhost", "127.0.0.1"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

SHARED_APPS = [
    "django_tenants",
    "core",
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "usuarios",
    "django.contrib.admin",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "corsheaders",
    "drf_spectacular",
    # show_urls and other operator commands (seed 000's `manage.py show_urls | grep backups`).
    "django_extensions",
    # Alerts and the nightly heartbeat: platform-wide, so in the public schema only.
    "alertas",
]
TENANT_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "usuarios",
    "django.contrib.admin",
    "django.contrib.sessions",
    "bitacora",
    "clinica",
    "backups",
    "backup_restore",
]
INSTALLED_APPS = SHARED_APPS + [app for app in TENANT_APPS if app not in SHARED_APPS]

TENANT_MODEL = "core.Tenant"
TENANT_DOMAIN_MODEL = "core.Domain"
PUBLIC_SCHEMA_URLCONF = "core.urls_public"
ROOT_URLCONF = "core.urls_tenant"
# A host that is no clinic's domain (Render's health check, the operator's
# admin) gets the public URLs; a clinic is chosen by header, by its domain, or
# on such a host by path: /clinicas/<slug>/… (django-tenants' subfolder routing,
# see core.middleware), so a browser reaches a clinic's admin on the one Render host.
SHOW_PUBLIC_IF_NO_TENANT_FOUND = True
TENANT_SUBFOLDER_PREFIX = "clinicas"

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Above the tenant middleware: a CORS preflight carries no X-Tenant-ID.
    "corsheaders.middleware.CorsMiddleware",
    "core.middleware.TenantMiddleware",
    # Right below the tenant: a clinic reached by path keeps its session and CSRF cookies its own.
    "core.middleware.ClinicPathCookiesMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]
WSGI_APPLICATION = "core.wsgi.application"


def _database_settings() -> dict:
    if env("DATABASE_URL", default=""):
        database = env.db_url("DATABASE_URL")
        # A socket directory may also be written percent-encoded as the host
        # (postgres://u@%2Frun%2Fpostgresql/db); django-environ keeps the escapes.
        database["HOST"] = unquote(str(database.get("HOST") or ""))
    else:
        state = embedded_pg.read_state()
        if state is None:
            from django.core.exceptions import ImproperlyConfigured

            raise ImproperlyConfigured(
                "DATABASE_URL no está definido y el PostgreSQL embebido no está iniciado: "
                "ejecute `make demo`, `make test` o `python -m core.embedded_pg start`."
            )
        database = {
            "NAME": state["name"],
            "USER": state["user"],
            "PASSWORD": "",
            "HOST": state["host"],
            "PORT": str(state["port"]),
        }
    database["ENGINE"] = "django_tenants.postgresql_backend"
    database.setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=0))
    # A process killed while its query waits (a lock, a long statement) leaves a backend that
    # notices only when it next writes to the socket, holding the clinic's operation lock
    # until then. PostgreSQL 14+ can check for a vanished client every so often instead.
    check_ms = env.int("DB_CLIENT_CHECK_MS", default=1000)
    if check_ms:
        options = database.setdefault("OPTIONS", {})
        options["options"] = f"{options.get('options', '')} -c client_connection_check_interval={check_ms}".strip()
    return database


DATABASES = {"default": _database_settings()}
DATABASE_ROUTERS = ("django_tenants.routers.TenantSyncRouter",)

# Where pg_dump and psql live; empty means "find the ones matching the server".
_embedded_state = embedded_pg.read_state() if not env("DATABASE_URL", default="") else None
PG_BIN_DIR = env("PG_BIN_DIR", default="") or (_embedded_state or {}).get("bin_dir", "")

AUTH_USER_MODEL = "usuarios.Usuario"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "es"
LANGUAGES = [("es", "Español"), ("en", "English")]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = env("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "var" / "static"
MEDIA_URL = "media/"
MEDIA_ROOT = Path(env("MEDIA_ROOT", default=str(BASE_DIR / "var" / "media")))
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

SUPABASE_URL = env("SUPABASE_URL", default="")
SUPABASE_KEY = env("SUPABASE_KEY", default="")
SUPABASE_BUCKET = env("SUPABASE_BUCKET", default="backups")
BACKUPS_LOCAL_ROOT = Path(env("BACKUPS_LOCAL_ROOT", default=str(BASE_DIR / "var" / "backups")))
# Retention (manage.py prune_backups): the newest N completed backups, plus the newest of
# each of the last D days, W ISO weeks and M months; never fewer than min_completed.
BACKUP_RETENTION = {
    "keep_last": env.int("BACKUP_KEEP_LAST", default=7),
    "daily": env.int("BACKUP_KEEP_DAILY", default=7),
    "weekly": env.int("BACKUP_KEEP_WEEKLY", default=4),
    "monthly": env.int("BACKUP_KEEP_MONTHLY", default=6),
    "min_completed": env.int("BACKUP_MIN_COMPLETED", default=3),
}
# Per clinic, schema name → the keys it changes, e.g. {"clinica_norte": {"monthly": 12}}.
BACKUP_RETENTION_OVERRIDES = env.json("BACKUP_RETENTION_OVERRIDES", default={})

# Patient files in a private Supabase bucket of their own when SUPABASE_MEDIA_BUCKET is set (what a
# deployment on several machines needs), else on the local disk; see core.storage_settings.
SUPABASE_MEDIA_BUCKET = env("SUPABASE_MEDIA_BUCKET", default="")
STORAGES = storages_setting(supabase_url=SUPABASE_URL, supabase_key=SUPABASE_KEY, backups_bucket=SUPABASE_BUCKET,
                            media_bucket=SUPABASE_MEDIA_BUCKET, backups_root=BACKUPS_LOCAL_ROOT)

# Backups sealed at rest (backups.storage.sealed): every object written to STORAGES["backups"] is
# age-encrypted to its clinic's own key, stored beside its backups wrapped to the platform's
# recipients. auto: sealed when the platform's keys are configured; with them missing, a remote
# storage (Supabase, S3) refuses to back up while the local disk keeps plain objects. on: always
# sealed (missing keys are an error). off: written plain (sealed objects are still read).
BACKUP_ENCRYPTION = env("BACKUP_ENCRYPTION", default="auto")
# The platform's age recipients (`age1…`, comma-separated): every one wraps every clinic key,
# so a second one can be an offline escrow key. Unset: the public keys of the identity below.
BACKUP_PLATFORM_RECIPIENTS = env.list("BACKUP_PLATFORM_RECIPIENTS", default=[])
# Its secret identities (`AGE-SECRET-KEY-1…`, one a line or comma-separated): a secret from the
# environment in production, never a file on a disk a deploy replaces. `make demo` (DEBUG) reads
# the one it made under var/ unless this is set.
BACKUP_PLATFORM_IDENTITY = env("BACKUP_PLATFORM_IDENTITY", default="")
BACKUP_PLATFORM_IDENTITY_FILE = env(
    "BACKUP_PLATFORM_IDENTITY_FILE", default=str(BASE_DIR / "var" / "keys" / "platform-identity.txt") if DEBUG else ""
)
# How long a process keeps the clinic keys it read (a key-object read and an X25519 unwrap per clinic).
BACKUP_KEY_CACHE_SECONDS = env.int("BACKUP_KEY_CACHE_SECONDS", default=300)

# Temporary files of every operation (dumps on their way, uploads): one folder, mode 0700.
BACKUP_TEMP_DIR = Path(env("BACKUP_TEMP_DIR", default=str(BASE_DIR / "var" / "tmp")))
# SQL backups take the structure pg_dump writes once per migration state and each clinic's
# rows by COPY (backups.dump.cached): a clinic's backup then costs the same among thousands
# of clinics. Off: every backup is a plain pg_dump. The cache folder may be deleted at will.
BACKUP_STRUCTURE_CACHE = env.bool("BACKUP_STRUCTURE_CACHE", default=True)
BACKUP_STRUCTURE_CACHE_DIR = Path(env("BACKUP_STRUCTURE_CACHE_DIR", default=str(BASE_DIR / "var" / "cache" / "backup-structure")))

# Jobs (Celery). With no broker configured, jobs run inline in the calling process,
# so `make demo` and `make test` need nothing beyond PostgreSQL.
CELERY_BROKER_URL = env("CELERY_BROKER_URL", default="") or env("REDIS_URL", default="")
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL
CELERY_TASK_EAGER_PROPAGATES = True
# A job's state lives in its database record (BackupRecord, RestoreJob), not in a result backend.
CELERY_TASK_IGNORE_RESULT = True
# Long jobs: a message is acknowledged only when its job ends (a worker killed mid-job
# leaves it in the queue; the job's record says whether it may run again), one at a time.
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = env.int("JOB_TIME_LIMIT", default=6 * 3600)
CELERY_TASK_SOFT_TIME_LIMIT = env.int("JOB_SOFT_TIME_LIMIT", default=CELERY_TASK_TIME_LIMIT - 300)
# Redis hands an unacknowledged message to another worker after this long: longer than any job.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": CELERY_TASK_TIME_LIMIT + 3600,
    # Several deployments (or test runs) may share one Redis: each keeps to its own keys.
    "global_keyprefix": env("JOB_KEY_PREFIX", default=""),
}
CELERY_TASK_DEFAULT_QUEUE = env("JOB_QUEUE", default="clinica")
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Restore drills (backups.drills): every clinic's latest backup is replayed into a scratch schema
# and checked at least every BACKUP_DRILL_EVERY_DAYS days, about 1/N of the clinics a night, at
# BACKUP_DRILL_HOUR:00 (UTC, Celery's clock), after the nightly backups (Render's cron, 03:00 UTC).
BACKUP_DRILL_EVERY_DAYS = env.int("BACKUP_DRILL_EVERY_DAYS", default=7)
BACKUP_DRILL_HOUR = env.int("BACKUP_DRILL_HOUR", default=5)
# Seconds, or a dict of crontab fields (UTC): core.celery makes it a crontab, so settings import no Celery.
CELERY_BEAT_SCHEDULE = {
    "reap-interrupted-operations": {"task": "backups.tasks.reap_task", "schedule": env.int("REAP_EVERY_SECONDS", default=900)},
    "restore-drills": {"task": "backups.tasks.drill_night_task", "schedule": {"hour": BACKUP_DRILL_HOUR, "minute": 0}},
    # Alerts (alertas): overdue clinics looked for every hour; digests, retries and heartbeat pings sent.
    "backups-overdue": {"task": "backups.tasks.overdue_alert_task", "schedule": {"minute": 30}},
    "alerts-flush": {"task": "alertas.tasks.alerts_flush_task", "schedule": env.int("BACKUP_ALERT_FLUSH_SECONDS", default=300)},
}
# How long an API call waits for the job it started before answering 202 with something to poll.
JOB_WAIT_SECONDS = env.float("JOB_WAIT_SECONDS", default=20)
# A job still `pending` after this long never reached a worker (a lost message): the reaper fails it.
# Long enough for a whole night's queue of clinics to drain, short enough that the next night's
# run finds the clinic free (a queued backup makes a new one a 409).
JOB_PENDING_MAX_AGE = timedelta(seconds=env.int("JOB_PENDING_MAX_AGE", default=20 * 3600))
# Backups retry transient storage errors this many times, waiting 30 s, 60 s, 120 s…
BACKUP_STORAGE_RETRIES = env.int("BACKUP_STORAGE_RETRIES", default=3)
BACKUP_RETRY_BASE_SECONDS = env.int("BACKUP_RETRY_BASE_SECONDS", default=30)

# The platform's view of every clinic's backups flags a clinic whose last completed backup
# is older than this (the nightly cron runs every 24 h; 2 h of slack).
BACKUP_OVERDUE_AFTER = timedelta(hours=env.float("BACKUP_OVERDUE_AFTER_HOURS", default=26))
# That page lists this many clinics a page, those with open alerts first.
BACKUP_PLATFORM_PAGE_SIZE = env.int("BACKUP_PLATFORM_PAGE_SIZE", default=100)

# Alerts (alertas): by email (Django's mail settings) and a JSON POST per message to a webhook; empty
# is off. The first of a kind a day goes at once, the rest join a digest after BACKUP_ALERT_DIGEST_MINUTES
# (or when the night ends). A failed delivery is retried BACKUP_ALERT_MAX_ATTEMPTS times, doubling.
BACKUP_ALERT_EMAILS = env.list("BACKUP_ALERT_EMAILS", default=[])
BACKUP_ALERT_FROM_EMAIL = env("BACKUP_ALERT_FROM_EMAIL", default="backups@localhost")
BACKUP_ALERT_WEBHOOK_URL = env("BACKUP_ALERT_WEBHOOK_URL", default="")
BACKUP_ALERT_DIGEST_MINUTES = env.int("BACKUP_ALERT_DIGEST_MINUTES", default=60)
BACKUP_ALERT_RETRY_SECONDS = env.int("BACKUP_ALERT_RETRY_SECONDS", default=60)
BACKUP_ALERT_MAX_ATTEMPTS = env.int("BACKUP_ALERT_MAX_ATTEMPTS", default=8)
# healthchecks.io-style: <url>/start when the cron queues the night, <url> once every clinic's job
# ended with none failed, else <url>/fail (alertas.nights).
BACKUP_HEARTBEAT_URL = env("BACKUP_HEARTBEAT_URL", default="")
# The web service's public address (https://…) for the platform page's link in alert emails: the
# worker that sends them cannot know it. Unset: the link is the page's path alone.
BACKUP_PLATFORM_URL = env("BACKUP_PLATFORM_URL", default="")
EMAIL_HOST = env("EMAIL_HOST", default="localhost")
EMAIL_PORT = env.int("EMAIL_PORT", default=25)
EMAIL_HOST_USER = env("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = env("EMAIL_HOST_PASSWORD", default="")
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", default=False)
EMAIL_USE_SSL = env.bool("EMAIL_USE_SSL", default=False)
# A mail server that does not answer must not hold a backup's worker.
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=10)

# A backup's file phase reads, hashes and uploads this many patient files at once
# (threads: hashing and I/O run outside the GIL). Memory stays bounded: each file in
# flight holds at most 4 MiB in memory, larger ones go to an anonymous temporary file.
BACKUP_FILE_WORKERS = env.int("BACKUP_FILE_WORKERS", default=4)
# SQL dumps and JSON exports are gzipped on this many threads (core.parallel_gzip; zlib runs outside
# the GIL), into one standard gzip member whatever the number. 0: one per CPU this process may use
# (os.sched_getaffinity, at most 8). 1: in the dumping thread, no pool.
BACKUP_COMPRESS_WORKERS = env.int("BACKUP_COMPRESS_WORKERS", default=0)

# SQL restore: how long the schema swap waits for the clinic's in-flight transactions.
BACKUP_RESTORE_LOCK_TIMEOUT = env("BACKUP_RESTORE_LOCK_TIMEOUT", default="10s")

# JSON restore: the largest upload accepted (bytes).
RESTORE_MAX_UPLOAD_BYTES = env.int("RESTORE_MAX_UPLOAD_BYTES", default=500 * 1024 * 1024)
# …and what it may inflate to once gunzipped (a 10 MB .json.gz can hold 10 GiB): past it, 413.
RESTORE_MAX_INFLATED_BYTES = env.int("RESTORE_MAX_INFLATED_BYTES", default=2 * 1024 * 1024 * 1024)
# The largest single row or header entry, in bytes of JSON: the parser holds a value it has not
# finished in memory, so a 300 MiB string is refused once this much of it is read (400).
RESTORE_MAX_VALUE_BYTES = env.int("RESTORE_MAX_VALUE_BYTES", default=8 * 1024 * 1024)
# Uploads above this go to a temporary file instead of memory: an anonymous one in
# BACKUP_TEMP_DIR, so a killed worker leaves no copy of a clinic's data behind.
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
FILE_UPLOAD_HANDLERS = [
    "django.core.files.uploadhandler.MemoryFileUploadHandler",
    "core.files.AnonymousFileUploadHandler",
]
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["core.authentication.TenantJWTAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "core.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "core.exceptions.exception_handler",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
    "UNAUTHENTICATED_USER": None,
    # Failed logins (usuarios.throttling), "<count>/<second|minute|hour|day>".
    "DEFAULT_THROTTLE_RATES": {
        "login_ip": env("LOGIN_FAILURES_PER_IP", default="30/hour"),
        "login_account": env("LOGIN_FAILURES_PER_ACCOUNT", default="10/hour"),
    },
    # Proxies in front that append to X-Forwarded-For (Render: 1), so the client
    # address is the one they saw, not one the client wrote. Unset: the header is
    # ignored and REMOTE_ADDR is the client. The rule is core.client_address's.
    "NUM_PROXIES": env.int("NUM_PROXIES", default=None),
}

# Login throttling counts live here. Local memory is per process: with several
# gunicorn workers each keeps its own counts; CACHE_URL=redis://… shares them.
CACHES = {"default": env.cache_url("CACHE_URL", default="locmemcache://")}

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=env.int("JWT_ACCESS_MINUTES", default=30)),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=env.int("JWT_REFRESH_DAYS", default=1)),
    # A key of its own, so rotating SECRET_KEY (sessions, admin) need not log
    # every clinic out, and vice versa.
    "SIGNING_KEY": env("JWT_SIGNING_KEY", default="") or SECRET_KEY,
    "ALGORITHM": "HS256",
    "AUTH_HEADER_TYPES": ("Bearer",),
    # simplejwt's AccessToken, refusing claims of other types than the server writes (a 401, not a 500).
    "AUTH_TOKEN_CLASSES": ("core.authentication.TenantAccessToken",),
    "TOKEN_OBTAIN_SERIALIZER": "core.authentication.TenantTokenObtainPairSerializer",
    "TOKEN_REFRESH_SERIALIZER": "core.authentication.TenantTokenRefreshSerializer",
}
if len(SIMPLE_JWT["SIGNING_KEY"]) < 32:
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured("JWT_SIGNING_KEY (o SECRET_KEY) debe tener al menos 32 caracteres.")

SPECTACULAR_SETTINGS = {
    "TITLE": "Clínica dental: backups y restauración",
    "DESCRIPTION": (
        "API por clínica. Cada petición lleva `Authorization: Bearer <jwt>` y "
        "`X-Tenant-ID: <esquema o slug de la clínica>`; un token sólo vale en la clínica que lo emitió."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Requests and answers get components of their own, so a request's schema says what the
    # server takes: a CharField that refuses blanks has minLength 1, an upload is binary
    # (not a URI string), a read-only field is no requirement of a request.
    "COMPONENT_SPLIT_REQUEST": True,
    # Our PATCH views validate the whole serializer (PATCH {"keep": …} requires keep), not
    # DRF's partial update: a "Patched" component without required fields would lie.
    "COMPONENT_SPLIT_PATCH": False,
}

CORS_ALLOWED_ORIGINS = env.list("CORS_ALLOWED_ORIGINS", default=["http://localhost:5173", "http://localhost:3000"])
CORS_ALLOW_HEADERS = ["accept", "accept-encoding", "accept-language", "authorization", "content-type", "dnt", "origin",
                      "user-agent", "x-csrftoken", "x-requested-with", "x-tenant-id", "x-tenant"]
CORS_EXPOSE_HEADERS = ["content-disposition", "content-length", "x-checksum-sha256", "x-sql-sha256"]

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if REST_FRAMEWORK["NUM_PROXIES"] else None  # else a client could claim https

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    # Tracebacks keep their frames and lose their messages, which may hold a patient's data (core.log_format).
    "formatters": {"plain": {"()": "core.log_format.RedactingFormatter", "format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"stdout": {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stdout"}},
    "root": {"handlers": ["stdout"], "level": env("LOG_LEVEL", default="INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # Django's own console handler (DEBUG) would print the same errors with full tracebacks: ours only.
        "django": {"handlers": [], "propagate": True},
        # httpx logs every URL at INFO, and a signed download URL carries a token.
        "httpx": {"level": "WARNING"},
    },
}
