"""Pages in the viewer's time zone: the browser names its zone (a `tz` cookie set by the admin's pages,
templates/admin/base_site.html), and each request of that browser shows times in it. Without the cookie,
or with a name that is not a time zone, times are in settings.TIME_ZONE."""

from __future__ import annotations

import functools
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.utils import timezone

COOKIE = "tz"


@functools.lru_cache(maxsize=64)
def zone_named(name: str) -> ZoneInfo | None:
    if not name or len(name) > 64:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


class ViewerTimeZoneMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        zone = zone_named(request.COOKIES.get(COOKIE, ""))
        if zone is None:
            timezone.deactivate()
        else:
            timezone.activate(zone)
        try:
            return self.get_response(request)
        finally:
            timezone.deactivate()
