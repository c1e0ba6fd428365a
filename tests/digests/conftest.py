import pytest

from tests.smtp_server import SMTPServer


@pytest.fixture
def smtp():
    """A real SMTP server on 127.0.0.1; Django's SMTP backend in this process mails to it."""
    with SMTPServer() as server:
        yield server


@pytest.fixture
def mail_to_smtp(settings, smtp):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", smtp.port
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
    settings.EMAIL_TIMEOUT = 5
    settings.SITE_URL = "https://runner.example.com"
    return smtp.inbox
