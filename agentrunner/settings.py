"""Settings, read from the environment (12-factor); `.env` is read if present.

Every variable is listed with its default in `.env.example`. Parsing is strict:
a malformed boolean or number stops start-up instead of silently becoming a default.
"""

import logging
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_bool(name: str, default: bool) -> bool:
    """Read a boolean strictly: a typo is an error at start-up, not False."""
    raw = env.str(name, default=str(int(default))).strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean (use 1/0, true/false).")


def env_number(name: str, default, cast=float):
    raw = env.str(name, default=str(default))
    try:
        return cast(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a {cast.__name__}.") from None


DEBUG = env_bool("DEBUG", False)

SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off.")
    SECRET_KEY = "development-only-insecure-key-do-not-deploy"  # noqa: S105 (DEBUG only)

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "dashboard.apps.DashboardAdminConfig",  # django.contrib.admin with our site, the dashboard its home (dashboard/)
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_q",
    "django_structlog",
    "agentrunner.apps.AgentRunnerConfig",
    "runs.apps.RunsConfig",
    "flows.apps.FlowsConfig",
    "schedules.apps.SchedulesConfig",
    "digests.apps.DigestsConfig",
    "dashboard.apps.DashboardConfig",
]

MIDDLEWARE = [
    "agentrunner.metrics.MetricsMiddleware",  # first: counts and times every answer, static files and redirects too
    "django.middleware.security.SecurityMiddleware",
    "agentrunner.middleware.RefuseNulInUrlMiddleware",  # a NUL in the URL: a 400 before any lookup can fail on it
    # Serves admin and API-docs assets under gunicorn, no web server needed.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "agentrunner.timezones.ViewerTimeZoneMiddleware",  # pages show times in the browser's time zone
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_structlog.middlewares.RequestMiddleware",
]

# django-structlog: one line per request (`request_finished`, with status, user and client IP); its
# `request_started` line only at DEBUG (measured: ~0.5 ms per request, and it says nothing the other does not).
DJANGO_STRUCTLOG_STATUS_START_LOG_LEVEL = logging.DEBUG

ROOT_URLCONF = "agentrunner.urls"
WSGI_APPLICATION = "agentrunner.wsgi.application"
ASGI_APPLICATION = "agentrunner.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
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

# --- Database -------------------------------------------------------------
# SQLite is the embedded default; PostgreSQL for production and CI.
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'var' / 'agentrunner.sqlite3'}")}
_db = DATABASES["default"]
if _db["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets readers proceed during a write; IMMEDIATE takes the write lock at
    # BEGIN, so the engine's "lock, check, write" transactions are serialised on
    # SQLite exactly as SELECT ... FOR UPDATE serialises them on PostgreSQL.
    _db["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=30000;",
    }
    # Tests run worker subprocesses against the test database: it must be a file.
    _db["TEST"] = {"NAME": str(Path(_db["NAME"]).with_suffix("")) + "-test.sqlite3"}
    Path(_db["NAME"]).parent.mkdir(parents=True, exist_ok=True)
else:
    # Persistent connections: django-q2 otherwise reconnects for every task
    # (~47 tasks/s vs ~400/s measured, see docs/architecture.md).
    _db["CONN_MAX_AGE"] = env_number("CONN_MAX_AGE", 60, int)
    _db["CONN_HEALTH_CHECKS"] = True
    # The engine's hot statements (runs.engine.fastpath) bind on the server and are prepared by psycopg
    # after 5 runs on a connection: planning them cost more than running them. Django's own queries
    # bind on the client and are never prepared. Off (0) behind a PgBouncer older than 1.21.
    if env.bool("DATABASE_PREPARED_STATEMENTS", default=True):
        _db.setdefault("OPTIONS", {})["prepare_threshold"] = 5

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env.str("REDIS_URL", default="")

# django-q2 keeps cluster liveness in the cache, which the web process reads for
# /api/v1/health: it must be shared between processes (database or Redis).
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "agentrunner_cache"}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
# One way to write dates (2026-12-01 21:30), in the admin and wherever Django formats one.
FORMAT_MODULE_PATH = ["agentrunner.formats"]
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# Uploads (document-extractor PDFs) and JSON bodies are bounded.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_number("MAX_REQUEST_BYTES", 10 * 1024 * 1024, int)
FILE_UPLOAD_MAX_MEMORY_SIZE = DATA_UPLOAD_MAX_MEMORY_SIZE
# Seconds a client has to send a request's body once its headers are in (agentrunner/slow_clients.py).
REQUEST_BODY_SECONDS = env_number("REQUEST_BODY_SECONDS", 30.0)

# --- Security (manage.py check --deploy is clean with DEBUG=0) -------------
if not DEBUG:
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    # Health checks, probes and Prometheus' scrapes come over plain HTTP from inside the host, pod or compose
    # network (the image's HEALTHCHECK, deploy/prometheus/prometheus.yml).
    SECURE_REDIRECT_EXEMPT = [r"^api/v1/health$", r"^health/(live|ready)$", r"^metrics$"]
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_number("SECURE_HSTS_SECONDS", 31536000, int)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

# --- Admin login throttling (django-axes) -------------------------------------
# After AXES_FAILURE_LIMIT failed logins for one username from one IP address, that pair is locked out for
# AXES_COOLOFF_MINUTES: the login answers 429 even to the right password. `manage.py axes_reset` (everyone)
# or `manage.py axes_reset_username USER` lifts a lockout. Only logins go through it (authenticate() with
# the request): API tokens (DRF TokenAuthentication) and tests' force_login() do not.
INSTALLED_APPS += ["axes"]
MIDDLEWARE += ["axes.middleware.AxesMiddleware"]  # last, as axes requires: it turns a lockout into the 429
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # first: refuses a locked-out pair before any password is checked
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_number("AXES_FAILURE_LIMIT", 5, int)
AXES_COOLOFF_MINUTES = env_number("AXES_COOLOFF_MINUTES", 15.0)
if AXES_FAILURE_LIMIT < 1 or AXES_COOLOFF_MINUTES <= 0:
    raise ImproperlyConfigured("AXES_FAILURE_LIMIT must be at least 1 and AXES_COOLOFF_MINUTES above 0.")
AXES_COOLOFF_TIME = AXES_COOLOFF_MINUTES / 60  # axes reads a number as hours
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True  # a successful login clears that pair's earlier failures
AXES_VERBOSE = False  # no "AXES: BEGIN" line at every process start; failures and lockouts are still logged
# The client address is REMOTE_ADDR (axes' default): behind a reverse proxy that is the proxy's address,
# so the lockout is then per username in effect. Forwarded headers are not trusted: a client could set them.

# --- REST API -------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["agentrunner.api.TeamPermissions"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PARSER_CLASSES": [
        "agentrunner.api.SafeJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_PAGINATION_CLASS": "agentrunner.api.LimitOffsetPagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "agentrunner.api.exception_handler",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"]
    + (["rest_framework.renderers.BrowsableAPIRenderer"] if DEBUG else []),
}

# --- Rate limits (agentrunner/ratelimit.py) --------------------------------------
# Run starts (POST /runs, /agents/run, /flows/{slug}/runs, /flow/execute) one user may make in any 60 s,
# staff included; over it the API answers 429 with Retry-After. 0 = no limit. Counted in Redis when REDIS_URL
# is set, else in the database, so the limit holds across every web process and machine.
# Each is the default of a team's own limit (set per team by a superuser in the admin or PATCH /teams/{slug}).
RUN_STARTS_PER_USER_PER_MINUTE = env_number("RUN_STARTS_PER_USER_PER_MINUTE", 20, int)
# Run starts a whole team may make in any 60 s, all its members together.
RUN_STARTS_PER_TEAM_PER_MINUTE = env_number("RUN_STARTS_PER_TEAM_PER_MINUTE", 100, int)
for _name in ("RUN_STARTS_PER_USER_PER_MINUTE", "RUN_STARTS_PER_TEAM_PER_MINUTE"):
    if globals()[_name] < 0:
        raise ImproperlyConfigured(f"{_name} must be 0 (no limit) or more.")

# GET /api/v1/health reuses its report this long in each web process (0: checks on every request).
HEALTH_CACHE_SECONDS = env_number("HEALTH_CACHE_SECONDS", 2.0)

# --- Metrics (GET /metrics, agentrunner/metrics.py) ---
# Set: /metrics asks for `Authorization: Bearer <METRICS_TOKEN>`. Unset: it answers loopback clients only.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
# The duration histograms cover runs (and LLM calls) of this many last seconds: bounded scrape cost.
METRICS_WINDOW_SECONDS = env_number("METRICS_WINDOW_SECONDS", 3600.0)
if METRICS_WINDOW_SECONDS <= 0:
    raise ImproperlyConfigured("METRICS_WINDOW_SECONDS must be above 0.")

SPECTACULAR_SETTINGS = {
    "TITLE": "Agent Runner API",
    "DESCRIPTION": (
        "Start runs of agents and of flows (agents chained with conditions), poll their state, read "
        "results and the timeline of every attempt; define flows, schedules that start runs by cron "
        "or interval, and digests that mail the best results of each period. Everything belongs to a team: "
        "a request acts in the team its `X-Team` header names (else the user's only team) and sees that "
        "team's objects only; another team's object answers 404. Roles per team: viewer reads, runner "
        "also starts and cancels runs, editor also defines flows, schedules and digests, admin also manages "
        "members and tokens. Authenticate with `Authorization: Token <key>` (or the admin session). Errors are always "
        '`{"detail", "code", "errors"}` with a 4xx status.'
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Each method of a URL served by `agentrunner.api.operations` is documented by its own view.
    "PREPROCESSING_HOOKS": ["agentrunner.api.schema_operations_hook"],
    # drf-spectacular's default, then the X-Team header and its errors on every operation that acts in a team.
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "agentrunner.openapi.team_header_hook"],
    "ENUM_NAME_OVERRIDES": {
        "RunStatusEnum": "runs.models.RunStatus",
        "StepStatusEnum": "runs.models.StepStatus",
        "AttemptStatusEnum": "runs.models.AttemptStatus",
        "ScheduleFireStatusEnum": "schedules.models.FireStatus",
        "DeliveryStatusEnum": "digests.models.DeliveryStatus",
    },
}

# --- Engine ---------------------------------------------------------------
# A running step's lease: the worker heartbeats every LEASE/3 s; an expired
# lease means the worker is gone and the reaper recovers the step.
RUN_LEASE_SECONDS = env_number("RUN_LEASE_SECONDS", 30.0)
# How often the engine tick (reaper, due retries, lost messages) runs.
ENGINE_TICK_SECONDS = env_number("ENGINE_TICK_SECONDS", 0.5)
# How often a running step checks for a cancel request (cancel latency).
CANCEL_POLL_SECONDS = env_number("CANCEL_POLL_SECONDS", 0.5)
# A cluster's task queue holding messages while all its idle workers wait to read it this long is stuck
# behind a killed worker (django-q2 issue #23); a worker then frees it (runs/engine/unjam.py).
QUEUE_STALL_SECONDS = env_number("QUEUE_STALL_SECONDS", 5.0)
# A slot taken when the run is accepted (`reject` policy) must be claimed by a
# worker within this time, or the run fails and the slot is freed.
SLOT_START_DEADLINE_SECONDS = env_number("SLOT_START_DEADLINE_SECONDS", 300.0)
# A step still QUEUED this long after its message was sent is sent again (a
# lost broker message; duplicates are harmless, the claim is guarded).
STEP_REDISPATCH_SECONDS = env_number("STEP_REDISPATCH_SECONDS", 120.0)
# Longest a single step may run; django-q2's timeout/retry derive from it.
STEP_MAX_SECONDS = env_number("STEP_MAX_SECONDS", 3660, int)
# Async agents (`async def run`) in flight at once per worker process, on its event loop. When it is
# full the worker takes no further step until one ends (backpressure); none is refused.
ASYNC_STEPS_PER_WORKER = env_number("ASYNC_STEPS_PER_WORKER", 100, int)
if ASYNC_STEPS_PER_WORKER < 1:
    raise ImproperlyConfigured("ASYNC_STEPS_PER_WORKER must be at least 1.")
# When a worker process stops (cluster stop, django-q2 recycle, its own timeout), its async steps get
# this long to finish; the ones still running are then handed back to the queue for another worker.
ASYNC_DRAIN_SECONDS = env_number("ASYNC_DRAIN_SECONDS", 20.0)
# `manage.py worker` (and `serve`): how long a stopping cluster may take before it is killed
# (running steps are then recovered through their leases). At least the async drain, and a margin.
WORKER_STOP_SECONDS = env_number("WORKER_STOP_SECONDS", ASYNC_DRAIN_SECONDS + 10)
# The one-statement PostgreSQL variants of claim and finish (runs/engine/fastpath.py); off = ORM only.
ENGINE_FASTPATH = env_bool("ENGINE_FASTPATH", True)
# Finished runs created and finished more than this many days ago are deleted, with their steps, attempts
# and decisions (runs/retention.py); their LLM calls stay (the cost record). 0 keeps every run.
RUN_RETENTION_DAYS = env_number("RUN_RETENTION_DAYS", 0, int)
RUN_RETENTION_MIN_DAYS = 8  # a weekly digest reads the runs of its last 7 days
if RUN_RETENTION_DAYS != 0 and not RUN_RETENTION_MIN_DAYS <= RUN_RETENTION_DAYS <= 36500:
    raise ImproperlyConfigured(
        f"RUN_RETENTION_DAYS must be 0 (keep every run) or from {RUN_RETENTION_MIN_DAYS} "
        "(a weekly digest reads the runs of its last 7 days) to 36500."
    )
# LLM calls (the cost record) older than this many days are deleted once their run is gone (retention or an
# admin's delete) or if they had none; a kept run keeps its calls. 0 keeps every call.
LLM_CALL_RETENTION_DAYS = env_number("LLM_CALL_RETENTION_DAYS", 0, int)
LLM_CALL_RETENTION_MIN_DAYS = 32  # the monthly budgets count this calendar month's calls
if LLM_CALL_RETENTION_DAYS != 0 and not LLM_CALL_RETENTION_MIN_DAYS <= LLM_CALL_RETENTION_DAYS <= 36500:
    raise ImproperlyConfigured(
        f"LLM_CALL_RETENTION_DAYS must be 0 (keep every call) or from {LLM_CALL_RETENTION_MIN_DAYS} "
        "(the monthly budgets count this calendar month's calls) to 36500."
    )
# Most steps (`max_steps`) an inline flow (POST /api/v1/flow/execute) may ask for when its user is a viewer or
# runner of the acting team; editors, admins and superusers keep the format's 10,000 (the name predates teams:
# "staff" meant those who define flows). Read by flows.services.max_steps_allowed.
FLOW_MAX_STEPS_NON_STAFF = env_number("FLOW_MAX_STEPS_NON_STAFF", 100, int)
if not 1 <= FLOW_MAX_STEPS_NON_STAFF <= 10_000:
    raise ImproperlyConfigured("FLOW_MAX_STEPS_NON_STAFF must be from 1 to 10000.")

# Extra modules whose import registers agents (the built-ins are always loaded). In development (make run)
# the default loads the demo's sample agents: the flow-manager's task1-task3 (samples/flow_manager.py).
DEMO_AGENT_MODULES = ["samples.flow_manager"]
AGENT_MODULES = env.list("AGENT_MODULES", default=DEMO_AGENT_MODULES if DEBUG else [])

# --- Outbound HTTP (http-request agent) ---------------------------------------
# Off by default: agents reach no network unless the operator allows it.
ALLOW_EXTERNAL_REQUESTS = env_bool("ALLOW_EXTERNAL_REQUESTS", False)
# Hosts and CIDRs always allowed, even private ones (e.g. "api.internal,10.1.0.0/16,127.0.0.1").
HTTP_AGENT_ALLOWLIST = env.list("HTTP_AGENT_ALLOWLIST", default=[])
HTTP_AGENT_CONNECT_TIMEOUT_SECONDS = env_number("HTTP_AGENT_CONNECT_TIMEOUT_SECONDS", 5.0)
HTTP_AGENT_READ_TIMEOUT_SECONDS = env_number("HTTP_AGENT_READ_TIMEOUT_SECONDS", 30.0)
HTTP_AGENT_MAX_RESPONSE_BYTES = env_number("HTTP_AGENT_MAX_RESPONSE_BYTES", 5 * 1024 * 1024, int)
HTTP_AGENT_MAX_REDIRECTS = env_number("HTTP_AGENT_MAX_REDIRECTS", 5, int)

# --- LLM gateway -----------------------------------------------------------------
# Failover order; providers without credentials are skipped.
LLM_PROVIDERS = env.list("LLM_PROVIDERS", default=["openai", "anthropic", "local"])
OPENAI_API_KEY = env.str("OPENAI_API_KEY", default="")
OPENAI_BASE_URL = env.str("OPENAI_BASE_URL", default="")  # empty = the SDK's default
OPENAI_MODEL = env.str("OPENAI_MODEL", default="gpt-4o-mini")
ANTHROPIC_API_KEY = env.str("ANTHROPIC_API_KEY", default="")
ANTHROPIC_BASE_URL = env.str("ANTHROPIC_BASE_URL", default="")
ANTHROPIC_MODEL = env.str("ANTHROPIC_MODEL", default="claude-3-5-haiku-latest")
# Any OpenAI-compatible server (vLLM, Ollama, llama.cpp): enabled when its base URL is set.
LOCAL_LLM_BASE_URL = env.str("LOCAL_LLM_BASE_URL", default="")
LOCAL_LLM_API_KEY = env.str("LOCAL_LLM_API_KEY", default="local")
LOCAL_LLM_MODEL = env.str("LOCAL_LLM_MODEL", default="llama3.1")
LLM_TIMEOUT_SECONDS = env_number("LLM_TIMEOUT_SECONDS", 60.0)
LLM_MAX_RETRIES = env_number("LLM_MAX_RETRIES", 2, int)  # per provider, on retryable errors
LLM_RETRY_BACKOFF_SECONDS = env_number("LLM_RETRY_BACKOFF_SECONDS", 0.5)
LLM_BREAKER_FAILURES = env_number("LLM_BREAKER_FAILURES", 5, int)  # consecutive failures that open it
LLM_BREAKER_RESET_SECONDS = env_number("LLM_BREAKER_RESET_SECONDS", 30.0)  # open -> half-open probe
# Monthly token budget per owner (the account that starts runs); 0 = unlimited. Per-user overrides in the admin.
LLM_MONTHLY_TOKEN_BUDGET = env_number("LLM_MONTHLY_TOKEN_BUDGET", 0, int)
# Monthly token budget per team, next to each owner's: the stricter applies; 0 = unlimited. Per team in the admin.
TEAM_MONTHLY_TOKEN_BUDGET = env_number("TEAM_MONTHLY_TOKEN_BUDGET", 0, int)
# LLM requests a team's runs may send in any 60 s (counted at dispatch, every provider try); a step over it
# waits and tries again, it does not fail. 0 = no limit. Per team in the admin.
LLM_REQUESTS_PER_TEAM_PER_MINUTE = env_number("LLM_REQUESTS_PER_TEAM_PER_MINUTE", 0, int)
for _name in ("TEAM_MONTHLY_TOKEN_BUDGET", "LLM_REQUESTS_PER_TEAM_PER_MINUTE"):
    if globals()[_name] < 0:
        raise ImproperlyConfigured(f"{_name} must be 0 (no limit) or more.")
LLM_BUDGET_WARNING_RATIO = env_number("LLM_BUDGET_WARNING_RATIO", 0.8)
# USD per million tokens: {"model": [prompt, completion]}; models not listed cost 0 (e.g. local ones).
LLM_PRICES = env.json(
    "LLM_PRICES",
    default={
        "gpt-4o-mini": [0.15, 0.60],
        "gpt-4o": [2.50, 10.00],
        "claude-3-5-haiku-latest": [0.80, 4.00],
        "claude-3-5-sonnet-latest": [3.00, 15.00],
    },
)

# --- Schedules and digests --------------------------------------------------
# A schedule with catch-up `skip_missed` still runs a slot this late (seconds); later ones are skipped.
SCHEDULE_MISFIRE_GRACE_SECONDS = env_number("SCHEDULE_MISFIRE_GRACE_SECONDS", 60.0)
# Links in digest emails point here (the admin's public address, no trailing slash).
SITE_URL = env.str("SITE_URL", default="http://127.0.0.1:8000").rstrip("/")
# A failed SMTP send is retried after 30 s, 60 s, 120 s, … up to this many attempts in all.
DIGEST_SEND_MAX_ATTEMPTS = env_number("DIGEST_SEND_MAX_ATTEMPTS", 5, int)
DIGEST_RETRY_BACKOFF_SECONDS = env_number("DIGEST_RETRY_BACKOFF_SECONDS", 30.0)

# --- Email ----------------------------------------------------------------
# EMAIL_URL (smtp://, smtp+tls://, smtp+ssl://, consolemail://; user and password
# URL-encoded) wins over the EMAIL_HOST/… variables. With neither, mail goes to
# the console (stdout of the worker): right for development, and a system check
# warns about it when DEBUG is off.
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="Agent Runner <agent-runner@localhost>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL
EMAIL_TIMEOUT = env_number("EMAIL_TIMEOUT", 30, int)
_email_url = env.str("EMAIL_URL", default="")
if _email_url:
    try:
        _email = environ.Env.email_url_config(_email_url)
    except (ValueError, KeyError) as exc:
        raise ImproperlyConfigured(f"EMAIL_URL cannot be read ({exc}); e.g. smtp+tls://user:pass@host:587.") from None
    EMAIL_BACKEND = _email["EMAIL_BACKEND"]
    EMAIL_HOST = _email["EMAIL_HOST"] or "localhost"
    EMAIL_USE_SSL = bool(_email.get("EMAIL_USE_SSL"))
    EMAIL_USE_TLS = bool(_email.get("EMAIL_USE_TLS")) and not EMAIL_USE_SSL
    EMAIL_PORT = _email["EMAIL_PORT"] or (465 if EMAIL_USE_SSL else 587 if EMAIL_USE_TLS else 25)
    EMAIL_HOST_USER = _email["EMAIL_HOST_USER"] or ""
    EMAIL_HOST_PASSWORD = _email["EMAIL_HOST_PASSWORD"] or ""
elif env.str("EMAIL_HOST", default=""):
    EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    EMAIL_HOST = env.str("EMAIL_HOST")
    EMAIL_PORT = env_number("EMAIL_PORT", 25, int)
    EMAIL_HOST_USER = env.str("EMAIL_HOST_USER", default="")
    EMAIL_HOST_PASSWORD = env.str("EMAIL_HOST_PASSWORD", default="")
    EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
    EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)
else:
    EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
# The domain of digest Message-IDs (deterministic per digest and period); default: the sender's domain.
EMAIL_MESSAGE_ID_DOMAIN = env.str("EMAIL_MESSAGE_ID_DOMAIN", default="")

# --- django-q2 ------------------------------------------------------------
Q_CLUSTER = {
    "name": env.str("Q_CLUSTER_NAME", default="agentrunner"),
    "workers": env_number("Q_WORKERS", 2, int),
    # Hard stop for a task; our steps stop themselves earlier (cancel, timeouts).
    "timeout": STEP_MAX_SECONDS,
    # Must exceed timeout: the broker re-delivers an unacknowledged task after
    # `retry` seconds, and must never do so while the step still runs.
    "retry": env_number("Q_RETRY", STEP_MAX_SECONDS + 60, int),
    # Our Run rows are the record of work; django-q2's success rows are not needed
    # and its default pruning scan costs 3-5x throughput (measured).
    "save_limit": -1,
    "ack_failures": True,
    "max_attempts": 3,
    # ORM broker pick-up latency is the poll interval (0.05 s -> p50 ~28 ms).
    "poll": env_number("Q_POLL", 0.05),
    # After downtime django-q2 fires a late schedule once; our fire task applies
    # the schedule's own catch-up policy (schedules/services.py).
    "catch_up": False,
    "label": "Task queue (django-q2)",
    # A worker process is replaced after this many tasks; its async steps drain first (ASYNC_DRAIN_SECONDS).
    "recycle": env_number("Q_RECYCLE", 500, int),
}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"

# --- Logging --------------------------------------------------------------
from agentrunner.logging import build_logging  # noqa: E402

LOG_LEVEL = env.str("LOG_LEVEL", default="INFO").upper()
LOG_FORMAT = env.str("LOG_FORMAT", default="json").lower()
if LOG_FORMAT not in {"json", "console"}:
    raise ImproperlyConfigured(f"LOG_FORMAT={LOG_FORMAT!r}: use json or console.")
LOGGING = build_logging(level=LOG_LEVEL, fmt=LOG_FORMAT)
DJANGO_STRUCTLOG_CELERY_ENABLED = False

# --- Development superuser (make run) ---------------------------------------
LOGIN_URL = "admin:login"
