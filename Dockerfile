# Agent Runner: one image, web or worker by command.
#   docker run IMAGE            -> gunicorn web server on :8000
#   docker run IMAGE worker     -> django-q2 cluster (workers + scheduler)
#   docker run IMAGE migrate    -> apply migrations
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_SETTINGS_MODULE=agentrunner.settings

WORKDIR /app
COPY requirements/base.txt requirements/base.txt
RUN pip install -r requirements/base.txt

COPY . .
# collectstatic needs a key to import settings; it is not used at run time.
RUN SECRET_KEY=build-only DEBUG=0 python manage.py collectstatic --noinput -v0 \
    && useradd --system --uid 10001 --home /app agentrunner \
    && mkdir -p /app/var && chown agentrunner /app/var

USER agentrunner
EXPOSE 8000

# Liveness by role (docker-entrypoint.sh writes the role): web: GET /health/live answers 200 (the process
# serves; a missing worker or database must not get a healthy web server restarted); worker: this
# container's own cluster is running. Route traffic on GET /health/ready (database and broker) instead.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD python manage.py healthcheck "$(cat /tmp/agentrunner-role 2>/dev/null || echo web)" \
        --url http://127.0.0.1:8000/health/live

ENTRYPOINT ["/app/docker-entrypoint.sh"]
CMD ["web"]
