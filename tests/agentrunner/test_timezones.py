"""Times in the viewer's time zone (the browser's `tz` cookie), written one way everywhere."""

from datetime import UTC, datetime

import pytest
from django.template import Context, Template
from django.utils import formats, timezone

from agentrunner.adminkit import clock, when, when_html
from agentrunner.timezones import zone_named

MOMENT = datetime(2026, 12, 1, 20, 30, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    "cookie,expected",
    [("Europe/Berlin", "Times in Europe/Berlin"), ("America/New_York", "Times in America/New_York")],
)
@pytest.mark.django_db
def test_admin_pages_are_in_the_zone_the_browser_named(admin_client, cookie, expected):
    admin_client.cookies["tz"] = cookie
    page = admin_client.get("/admin/password_change/").content.decode()
    assert expected in page
    assert "document.cookie" in page  # the script that names the browser's zone


@pytest.mark.parametrize("cookie", ["", "Not/AZone", "../../etc/passwd", "x" * 200, "Europe/Berlin\x00"])
@pytest.mark.django_db
def test_a_cookie_that_names_no_zone_leaves_the_servers(admin_client, cookie):
    admin_client.cookies["tz"] = cookie
    response = admin_client.get("/admin/password_change/")
    assert response.status_code == 200
    assert "Times in UTC" in response.content.decode()


def test_one_format_in_the_active_zone():
    with timezone.override(zone_named("Europe/Berlin")):
        assert when(MOMENT) == "2026-12-01 21:30"
        assert ">21:30:05<" in clock(MOMENT) and "2026-12-01 21:30:05 CET" in clock(MOMENT)
        assert "2026-12-01 15:30 in America/New_York" in when_html(MOMENT, also=zone_named("America/New_York"))
        # Django's own formatting (the admin's date columns, templates' |date) says the same.
        assert formats.date_format(timezone.localtime(MOMENT), "DATETIME_FORMAT") == "2026-12-01 21:30"
        assert Template("{{ moment }}").render(Context({"moment": MOMENT})) == "2026-12-01 21:30"
