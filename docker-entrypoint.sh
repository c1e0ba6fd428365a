#!/bin/sh
set -e
case "$1" in
  web)
    echo web > /tmp/agentrunner-role
    shift
    exec gunicorn agentrunner.wsgi --bind 0.0.0.0:8000 --workers "${WEB_CONCURRENCY:-2}" --access-logfile - "$@"
    ;;
  worker)
    echo worker > /tmp/agentrunner-role
    exec python manage.py qcluster
    ;;
  migrate)
    exec python manage.py migrate --noinput
    ;;
  *)
    exec "$@"
    ;;
esac
