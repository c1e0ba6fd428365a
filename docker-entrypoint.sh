#!/bin/sh
set -e
case "$1" in
  web)
    shift
    exec gunicorn agentrunner.wsgi --bind 0.0.0.0:8000 --workers "${WEB_CONCURRENCY:-2}" --access-logfile - "$@"
    ;;
  worker)
    exec python manage.py qcluster
    ;;
  migrate)
    exec python manage.py migrate --noinput
    ;;
  *)
    exec "$@"
    ;;
esac
