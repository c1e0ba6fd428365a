from django.apps import AppConfig


class RunsConfig(AppConfig):
    name = "runs"
    verbose_name = "Runs"

    def ready(self):
        from runs import signals  # noqa: F401  (starts the engine tick in worker processes)
