"""The site's home page: where the admin, the API documentation and the health report are."""

from django.shortcuts import render


def home(request):
    """GET /: a short page of links (the admin's "View site" lands here)."""
    return render(request, "home.html")
