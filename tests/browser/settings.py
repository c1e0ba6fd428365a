"""The browser tests' web server: the test settings, with the static files (the admin's CSS, the flow editor's
CodeMirror) served from the apps' static folders, as `collectstatic` is not run for the tests, and the content
types read afresh for every request (tests/browser/middleware.py)."""

from tests.settings import *  # noqa: F403

WHITENOISE_USE_FINDERS = True
MIDDLEWARE = ["tests.browser.middleware.forget_content_types", *MIDDLEWARE]  # noqa: F405
