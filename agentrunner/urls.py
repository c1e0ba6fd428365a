from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from agentrunner import health, views
from agentrunner.health import HealthApi
from agentrunner.metrics import metrics_view

urlpatterns = [
    path("", views.home, name="home"),
    path("admin/", admin.site.urls),
    path("health/live", health.live, name="health-live"),
    path("health/ready", health.ready, name="health-ready"),
    path("api/v1/health", HealthApi.as_view(), name="health"),
    path("metrics", metrics_view, name="metrics"),
    path("api/v1/", include("runs.urls")),
    path("api/v1/", include("flows.urls")),
    path("api/v1/", include("schedules.urls")),
    path("api/v1/", include("digests.urls")),
    path("api/v1/", include("agentrunner.teams.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="schema"), name="redoc"),
]


def not_found(request, exception=None):
    """JSON 404 under /api/ (e.g. a malformed run id), Django's page elsewhere."""
    from django.http import JsonResponse
    from django.views.defaults import page_not_found

    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Not found.", "code": "not_found", "errors": {}}, status=404)
    return page_not_found(request, exception)


handler404 = not_found
