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

# web: GET /api/v1/health must answer 200; worker: this container's cluster must be running.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD python manage.py healthcheck "$(cat /tmp/agentrunner-role 2>/dev/null || echo web)"

ENTRYPOINT ["/app/docker-entrypoint.sh"]
CMD ["web"]
