import os

from django.conf import settings
from django.core.wsgi import get_wsgi_application

from agentrunner.slow_clients import body_deadline

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agentrunner.settings")
application = body_deadline(get_wsgi_application(), settings.REQUEST_BODY_SECONDS)
