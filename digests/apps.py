from django.apps import AppConfig


class DigestsConfig(AppConfig):
    name = "digests"
    verbose_name = "Digests"

    def ready(self):
        from digests import signals  # noqa: F401  (digest work in the engine tick)
