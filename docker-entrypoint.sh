#!/bin/sh
set -e
case "$1" in
  web)
    echo web > /tmp/agentrunner-role
    shift
    # Settings in gunicorn.conf.py (threads, timeouts fitting the longest wait, slow-client deadline).
    exec gunicorn --bind 0.0.0.0:8000 --access-logfile - "$@"
    ;;
  worker)
    echo worker > /tmp/agentrunner-role
    # Not qcluster itself: `worker` stops it cleanly whichever way SIGTERM arrives, within WORKER_STOP_SECONDS.
    exec python manage.py worker
    ;;
  migrate)
    exec python manage.py migrate --noinput
    ;;
  *)
    exec "$@"
    ;;
esac
