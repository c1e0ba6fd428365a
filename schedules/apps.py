from django.apps import AppConfig


class SchedulesConfig(AppConfig):
    name = "schedules"
    verbose_name = "Schedules"

    def ready(self):
        from schedules import signals  # noqa: F401  (schedule work in the engine tick)
