"""Settings for the test suite: production settings plus a throwaway key and fast hashing.

The database and channel layer still come from DATABASE_URL and REDIS_URL, so the same
suite runs on SQLite/in-memory and on PostgreSQL/Redis.
"""

import os

os.environ.setdefault("SECRET_KEY", "test-suite-only-key-" + "x" * 40)

from fleet.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
SECURE_HSTS_SECONDS = 0
SECURE_SSL_REDIRECT = False  # the test client and the browser tests speak plain HTTP

# Two test runs sharing one Redis must not hear each other's live updates.
if CHANNEL_LAYERS["default"]["BACKEND"].startswith("channels_redis"):  # noqa: F405
    CHANNEL_LAYERS["default"]["CONFIG"]["prefix"] = f"fleetbook-test-{os.getpid()}"  # noqa: F405

# Two test runs on one machine (or a developer's run beside CI) get their own databases.
_run = os.getpid()
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":  # noqa: F405
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-{_run}.sqlite3")}  # noqa: F405
else:
    DATABASES["default"]["TEST"] = {"NAME": f"test_{DATABASES['default']['NAME']}_{_run}"}  # noqa: F405
# Tests clear the cache between cases; on Redis that would be FLUSHDB under every other
# user of that Redis database, so the suite keeps its cache in process memory.
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
