"""Middleware of the browser tests' web server only (tests/browser/settings.py)."""

from django.contrib.contenttypes.models import ContentType


def forget_content_types(get_response):
    """Read content types afresh for every request.

    The server outlives the tests, and the test database is emptied after each test: the content types are then
    created again, with new ids. The test process forgets its cached ids at that moment (Django's post_migrate);
    the server cannot know, and would write admin log entries that name ids no longer there.
    """

    def middleware(request):
        ContentType.objects.clear_cache()
        return get_response(request)

    return middleware
