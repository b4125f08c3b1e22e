"""Fleetbook settings.

Every setting comes from an environment variable with a default that lets a newcomer
run the demo with nothing installed (SQLite file under ``var/``, in-memory channel
layer, no MQTT). The README has a table of them all; keep it in step with this file.
"""

from __future__ import annotations

import os
import socket
import warnings
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("FLEETBOOK_VAR_DIR", BASE_DIR / "var"))


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    return int(raw) if raw.strip() else default


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "")
    return float(raw) if raw.strip() else default


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


DEBUG = env_bool("DEBUG", False)
SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. Set it to a long random string, or set DEBUG=1 for a "
            "development machine (a fixed development key is then used)."
        )
    SECRET_KEY = "development-only-key-not-for-production-use-0123456789abcdef"

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
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
    "channels",
    "fleet",
    "telematics",
    "logbook",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "fleet.middleware.ContentSecurityPolicyMiddleware",
]

ROOT_URLCONF = "fleet.urls"
ASGI_APPLICATION = "fleet.asgi.application"
WSGI_APPLICATION = None

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
                "fleet.context_processors.fleet_settings",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------
DEFAULT_SQLITE_URL = f"sqlite:///{VAR_DIR / 'fleetbook.sqlite3'}"
DATABASE_URL = os.environ.get("DATABASE_URL", "") or DEFAULT_SQLITE_URL
# Under ASGI every request may run in a new thread, so persistent connections would only
# linger (Django's advice); the ingest threads keep theirs open on their own.
DATABASES = {"default": dj_database_url.parse(DATABASE_URL,
                                              conn_max_age=env_int("CONN_MAX_AGE", 0))}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    # WAL lets the web pages read while the ingest listeners write in the same process;
    # IMMEDIATE transactions avoid "database is locked" on lock upgrades.
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test.sqlite3")}
# ...so each request of a web process would open (and PostgreSQL fork a backend for) a
# connection of its own: DB_POOL_MAX > 0 keeps up to that many per process in psycopg's
# pool instead. For the web processes; the ingest threads keep their own connections.
DB_POOL_MAX = env_int("DB_POOL_MAX", 0)
if DB_POOL_MAX > 0 and DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": 1, "max_size": DB_POOL_MAX, "timeout": 10}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Channel layer (live updates) -----------------------------------------------------
REDIS_URL = os.environ.get("REDIS_URL", "")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                # redis-py 8 reads with a 5 s socket timeout, as long as the layer's
                # blocking pop waits: an idle websocket's receive could time out. Reads
                # get 15 s, longer than any blocking command; connects give up after 5.
                "hosts": [{"address": REDIS_URL, "socket_timeout": 15,
                           "socket_connect_timeout": 5}],
                "prefix": os.environ.get("CHANNEL_PREFIX", "fleetbook"),
                "capacity": 1000,
                "expiry": 10,
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# With Redis, the cache (API rate limits among others) is shared by every process.
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                          "LOCATION": REDIS_URL, "KEY_PREFIX": "fleetbook"}}

# --- Auth and i18n --------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_ATTEMPTS_PER_WINDOW = env_int("LOGIN_ATTEMPTS_PER_WINDOW", 10)
LOGIN_WINDOW_S = env_int("LOGIN_WINDOW_S", 300)
# /metrics answers these addresses (Prometheus) and staff users; everyone else gets 404.
METRICS_ALLOWED_IPS = env_list("METRICS_ALLOWED_IPS", ["127.0.0.1", "::1"])
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en"
TIME_ZONE = "UTC"  # stored and processed in UTC; shown in the organisation's zone
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", BASE_DIR / "staticfiles"))
STATICFILES_DIRS = [BASE_DIR / "static"] if (BASE_DIR / "static").is_dir() else []
WHITENOISE_USE_FINDERS = True

# --- Security (production values unless DEBUG) ----------------------------------------
SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", not DEBUG)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
# Load balancers probe these over plain HTTP inside the network.
SECURE_REDIRECT_EXEMPT = [r"^health/$", r"^metrics$"]
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", not DEBUG)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", not DEBUG)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
X_FRAME_OPTIONS = "DENY"

# --- REST API -------------------------------------------------------------------------
REST_FRAMEWORK = {
    # Bearer first: its WWW-Authenticate header makes a missing login answer 401, not 403.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "fleet.api.authentication.BearerTokenAuthentication",
        "fleet.api.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "fleet.api.pagination.PagePagination",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_THROTTLE_CLASSES": [
        "fleet.api.throttling.AnonThrottle",
        "fleet.api.throttling.UserThrottle",
    ],
    # Requests per client; an empty variable switches that limit off.
    "DEFAULT_THROTTLE_RATES": {
        "anon": os.environ.get("API_RATE_ANON", "60/min") or None,
        "user": os.environ.get("API_RATE_USER", "1200/min") or None,
        "token": os.environ.get("API_RATE_TOKEN", "10/min") or None,
    },
    "EXCEPTION_HANDLER": "fleet.api.views.exception_handler",
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Fleetbook API",
    "DESCRIPTION": (
        "The REST API dispatch systems and other integrations use. Log in with "
        "`POST /api/v1/auth/token/` and send `Authorization: Bearer <token>`, or use an "
        "organisation API key as `Authorization: Api-Key <key>` or `X-Api-Key: <key>`. "
        "Times are RFC 3339 in UTC; units are in the field names."
    ),
    "VERSION": "1",
    "SCHEMA_PATH_PREFIX": "/api/v1",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "RoleEnum": "fleet.models.Role",
        "ProtocolEnum": "telematics.models.Protocol",
        "VehicleStatusEnum": "fleet.status.VehicleStatus",
    },
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}
# A vehicle with no fix for longer than this is "offline" (API and dashboard alike).
VEHICLE_OFFLINE_AFTER_S = env_float("VEHICLE_OFFLINE_AFTER_S", 600.0)
# Rows per page of a position list or feed, at most (also the default page).
API_POSITIONS_MAX_PAGE_SIZE = env_int("API_POSITIONS_MAX_PAGE_SIZE", 1000)
# The position feed holds back rows stored less than this long ago, so that a batch
# still being committed cannot land behind a cursor a client already holds.
API_FEED_SETTLE_S = env_float("API_FEED_SETTLE_S", 5.0)
# Lifetime of a login token from POST /api/v1/auth/token/, from issue (not sliding).
API_TOKEN_TTL_S = env_int("API_TOKEN_TTL_S", 12 * 3600)
# Each web process remembers a checked token or API key this long (0: never), so a
# request costs no lookup; a revocation reaches the other processes within this time.
API_AUTH_CACHE_S = env_float("API_AUTH_CACHE_S", 5.0)

# --- Map ------------------------------------------------------------------------------
# Tile URL template for the live map; empty gives a plain background.
MAP_TILE_URL = os.environ.get("MAP_TILE_URL", "")
# Tile providers require their attribution on the map, e.g. "© OpenStreetMap contributors".
MAP_TILE_ATTRIBUTION = os.environ.get("MAP_TILE_ATTRIBUTION", "")

# --- Telematics ingest ----------------------------------------------------------------
MQTT_URL = os.environ.get("MQTT_URL", "")
MQTT_TOPIC_ROOT = os.environ.get("MQTT_TOPIC_ROOT", "fleet")
# Each ingest process needs its own id for its persistent session; the hostname is a
# good default when each process runs on its own host or container.
MQTT_CLIENT_ID = os.environ.get("MQTT_CLIENT_ID", "") or f"fleetbook-ingest-{socket.gethostname()}"
INGEST_BIND = os.environ.get("INGEST_BIND", "0.0.0.0")
INGEST_PORTS = {
    "teltonika": env_int("TELTONIKA_PORT", 5027),
    "gt06": env_int("GT06_PORT", 5023),
    "nmea": env_int("NMEA_PORT", 5005),
    "osmand": env_int("OSMAND_PORT", 5055),
    "coap": env_int("COAP_PORT", 5683),
}
INGEST_TLS_CERT = os.environ.get("INGEST_TLS_CERT", "")
INGEST_TLS_KEY = os.environ.get("INGEST_TLS_KEY", "")
INGEST_MAX_FRAME_BYTES = env_int("INGEST_MAX_FRAME_BYTES", 65536)
INGEST_IDLE_TIMEOUT_S = env_float("INGEST_IDLE_TIMEOUT_S", 600.0)
INGEST_MAX_SPEED_KMH = env_float("INGEST_MAX_SPEED_KMH", 400.0)
INGEST_MAX_FUTURE_S = env_float("INGEST_MAX_FUTURE_S", 86400.0)
INGEST_BATCH_MAX = env_int("INGEST_BATCH_MAX", 5000)
INGEST_BATCH_WAIT_MS = env_float("INGEST_BATCH_WAIT_MS", 20.0)
INGEST_STORE_RAW = env_bool("INGEST_STORE_RAW", False)
INGEST_UNKNOWN_THROTTLE_S = env_float("INGEST_UNKNOWN_THROTTLE_S", 30.0)
# How long a unit's registration is cached: a device moved to another vehicle, deactivated
# or deleted takes effect within this time, also on a unit's open TCP connection.
INGEST_UNIT_CACHE_S = env_float("INGEST_UNIT_CACHE_S", 60.0)
INGEST_METRICS_PORT = env_int("INGEST_METRICS_PORT", 9464)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# The demo serves static files straight from the app folders (WHITENOISE_USE_FINDERS);
# only a production deployment runs collectstatic into STATIC_ROOT.
warnings.filterwarnings("ignore", message="No directory at", module="whitenoise.base")

# --- Logbook --------------------------------------------------------------------------
# Thresholds of trip derivation and the logbook rules are per organisation (admin:
# Logbook settings; defaults for cars, see logbook/README.md). These are per process.
# Derive trips live in the ingest process (a worker thread fed after each stored batch).
LOGBOOK_LIVE = env_bool("LOGBOOK_LIVE", True)
# How often the trip tracker closes the trips of silent vehicles and fills addresses (s).
LOGBOOK_HOUSEKEEPING_S = env_float("LOGBOOK_HOUSEKEEPING_S", 30.0)
# Rows the live tracker lets wait before it drops batches and catches those vehicles up
# from the stored positions (bounded memory; no trip is lost), and how often it saves
# each vehicle's machine state when nothing was decided (s).
LOGBOOK_LIVE_MAX_QUEUED = env_int("LOGBOOK_LIVE_MAX_QUEUED", 50_000)
LOGBOOK_LIVE_FLUSH_S = env_float("LOGBOOK_LIVE_FLUSH_S", 60.0)
# Reverse geocoding with geopy: provider name and server URL (a self-hosted Nominatim in
# production, e.g. http://nominatim:8080). Empty URL: the organisations' named places only,
# fully offline.
GEOCODER_PROVIDER = os.environ.get("GEOCODER_PROVIDER", "nominatim")
GEOCODER_URL = os.environ.get("GEOCODER_URL", "")
GEOCODER_USER_AGENT = os.environ.get("GEOCODER_USER_AGENT", "fleetbook-logbook")
GEOCODER_TIMEOUT_S = env_float("GEOCODER_TIMEOUT_S", 5.0)
# Pause between two requests; the public Nominatim allows one a second, your own any.
GEOCODER_MIN_DELAY_S = env_float("GEOCODER_MIN_DELAY_S", 1.0)
GEOCODER_LANGUAGE = os.environ.get("GEOCODER_LANGUAGE", "de")
# Addresses are cached by coordinates rounded to this many decimals (4: about 11 m).
GEOCODER_CACHE_DECIMALS = env_int("GEOCODER_CACHE_DECIMALS", 4)

# --- Geofences, alerts and e-mail -----------------------------------------------------
# Evaluate geofences and alert rules in the ingest process (telematics.alerts.worker).
ALERTS_LIVE = env_bool("ALERTS_LIVE", True)
# How often the ingest checks rules that need no fix: units offline, CAN-only fuel (s).
ALERTS_CHECK_S = env_float("ALERTS_CHECK_S", 30.0)
# Hysteresis against GPS jitter: a vehicle enters a geofence when a fix is this far
# inside (or two fixes in a row are inside at all) and leaves when one is this far out.
GEOFENCE_HYSTERESIS_M = env_float("GEOFENCE_HYSTERESIS_M", 25.0)
# Alert e-mails go through Django's mail backend; the default prints them to the log.
EMAIL_BACKEND = os.environ.get("EMAIL_BACKEND",
                               "django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)
EMAIL_TIMEOUT = env_float("EMAIL_TIMEOUT", 10.0)
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "Fleetbook <fleetbook@localhost>")
# The site's address for links in e-mails, e.g. https://fleet.example.com (empty: none).
SITE_URL = os.environ.get("SITE_URL", "")

# --- Dispatch: jobs, unit commands, webhooks ------------------------------------------
# A job stop is left when a fix lies beyond radius_m times this (hysteresis against jitter).
JOB_STOP_EXIT_FACTOR = env_float("JOB_STOP_EXIT_FACTOR", 1.5)
# Detect arrivals and departures at job stops in the ingest process (fleet.jobs).
JOBS_LIVE = env_bool("JOBS_LIVE", True)
# A sent command that no answer reached within this many seconds is marked failed.
COMMAND_ANSWER_TIMEOUT_S = env_float("COMMAND_ANSWER_TIMEOUT_S", 300.0)
# Deliver webhooks from the ingest process too (`manage.py deliver_webhooks` runs alone).
WEBHOOKS_IN_INGEST = env_bool("WEBHOOKS_IN_INGEST", True)
WEBHOOK_POLL_S = env_float("WEBHOOK_POLL_S", 1.0)
WEBHOOK_TIMEOUT_S = env_float("WEBHOOK_TIMEOUT_S", 10.0)
# Attempts per delivery, and the backoff: base * 2^(attempt - 1), at most WEBHOOK_RETRY_MAX_S.
WEBHOOK_MAX_ATTEMPTS = env_int("WEBHOOK_MAX_ATTEMPTS", 10)
WEBHOOK_RETRY_BASE_S = env_float("WEBHOOK_RETRY_BASE_S", 30.0)
WEBHOOK_RETRY_MAX_S = env_float("WEBHOOK_RETRY_MAX_S", 3600.0)
# Webhook URLs resolving to loopback, private or link-local addresses are refused unless
# this is on (a webhook must not become a way into the internal network).
WEBHOOK_ALLOW_PRIVATE_ADDRESSES = env_bool("WEBHOOK_ALLOW_PRIVATE_ADDRESSES", DEBUG)
SPECTACULAR_SETTINGS["ENUM_NAME_OVERRIDES"].update({
    "JobStatusEnum": "fleet.models.JobStatus",
    "UnitCommandStatusEnum": "fleet.models.CommandStatus",
    "WebhookDeliveryStatusEnum": "fleet.models.DeliveryStatus",
    "WebhookEventTypeEnum": "fleet.webhooks.EVENT_TYPE_CHOICES",
})
