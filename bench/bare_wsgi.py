"""The baseline of bench/api_bench.py: the least a Django JSON endpoint on PostgreSQL does.

    gunicorn -c gunicorn.conf.py bench.bare_wsgi:application     # from the repository, as the bench does

Minimal settings (no installed app, no middleware, no logging set-up of ours), one URL pattern matching
every path and method: one `SELECT 1` on the default database, then a small JsonResponse. The database
is configured as the project configures PostgreSQL (agentrunner/settings.py): DATABASE_URL,
CONN_MAX_AGE (default 60), CONN_HEALTH_CHECKS and the same connection options, so both servers pay
the same connection reuse and per-request health check. Content-Length is set by the view (the project
gets it from CommonMiddleware): both servers then answer with the same framing, never chunked.
"""

import os

import environ
from django.conf import settings

if not settings.configured:
    _db = environ.Env.db_url_config(os.environ["DATABASE_URL"])
    _db["CONN_MAX_AGE"] = int(os.environ.get("CONN_MAX_AGE", "60"))
    _db["CONN_HEALTH_CHECKS"] = True
    if os.environ.get("DATABASE_PREPARED_STATEMENTS", "1").lower() not in {"0", "false", "no", "off"}:
        _db.setdefault("OPTIONS", {})["prepare_threshold"] = 5
    settings.configure(
        DEBUG=False,
        SECRET_KEY=os.environ["SECRET_KEY"],
        ALLOWED_HOSTS=os.environ.get("ALLOWED_HOSTS", "127.0.0.1").split(","),
        ROOT_URLCONF=__name__,
        MIDDLEWARE=[],
        INSTALLED_APPS=[],
        DATABASES={"default": _db},
        USE_TZ=True,
        USE_I18N=False,
    )

from django.core.wsgi import get_wsgi_application  # noqa: E402 (after settings)
from django.db import connection  # noqa: E402
from django.http import JsonResponse  # noqa: E402
from django.urls import re_path  # noqa: E402


def ping(request):
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    response = JsonResponse({"status": "ok"})
    response["Content-Length"] = str(len(response.content))
    return response


urlpatterns = [re_path(r"", ping)]

application = get_wsgi_application()
