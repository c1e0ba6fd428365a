"""Requests refused before any view: a URL holding a NUL character."""

from django.http import HttpResponseBadRequest, JsonResponse

from agentrunner.api import error_body

COMPACT = {"separators": (",", ":")}  # as DRF writes the API's other answers
NUL_DETAIL = "The URL holds a NUL character (%00): no path or parameter of this service can contain one."


class RefuseNulInUrlMiddleware:
    """A 400 for a URL whose path or query holds a NUL character.

    PostgreSQL refuses such text in any statement, so every lookup built from the URL (an admin list's filter, an
    object's id in an admin page, e.g. django-q2's task pages) would otherwise be a 500. Checked on the raw URL:
    the path is already decoded, the query string not yet (NUL arrives there as %00).
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if "\x00" in request.path or "%00" in request.META.get("QUERY_STRING", ""):
            if request.path.startswith("/api/"):
                return JsonResponse(error_body(NUL_DETAIL, "bad_request"), status=400, json_dumps_params=COMPACT)
            return HttpResponseBadRequest(NUL_DETAIL, content_type="text/plain; charset=utf-8")
        return self.get_response(request)
