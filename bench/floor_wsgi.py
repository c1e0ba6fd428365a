"""The floors of bench/api_bench.py: what the project's own stack costs before an endpoint does any work.

    gunicorn -c gunicorn.conf.py bench.floor_wsgi:application     # from the repository, as the bench does

The project's WSGI application (agentrunner.wsgi: its settings, every middleware, logging, the DRF defaults),
with its URLs replaced by three endpoints that do next to nothing, so the bench can say how far below the bare
view the stack alone already is:

- /floor/middleware: the bare view's work (`SELECT 1`, a small JsonResponse) behind the project's middleware;
- /floor/token: an empty DRF view with the project's authentication (the `Authorization: Token` lookup);
- /floor/team: the same with the project's default permission class as well (the acting team and role).
"""

import agentrunner.wsgi

application = agentrunner.wsgi.application  # served; importing it configured Django, which DRF's views read

from django.conf import settings  # noqa: E402
from django.db import connection  # noqa: E402
from django.http import JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402
from rest_framework.permissions import IsAuthenticated  # noqa: E402
from rest_framework.response import Response  # noqa: E402
from rest_framework.views import APIView  # noqa: E402


def middleware_only(request):
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return JsonResponse({"status": "ok"})


class TokenOnly(APIView):
    permission_classes = [IsAuthenticated]

    def get(self, request):
        return Response({"status": "ok"})


class ActingTeam(APIView):  # DRF's defaults as the project sets them: TeamPermissions resolves the acting team
    def get(self, request):
        return Response({"status": "ok"})


urlpatterns = [
    path("floor/middleware", middleware_only),
    path("floor/token", TokenOnly.as_view()),
    path("floor/team", ActingTeam.as_view()),
]
settings.ROOT_URLCONF = __name__
