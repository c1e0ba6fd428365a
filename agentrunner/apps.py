from django.apps import AppConfig


class AgentRunnerConfig(AppConfig):
    name = "agentrunner"
    verbose_name = "LLM"  # its models in the admin: LLM calls, monthly budgets, provider breakers

    def ready(self):
        import importlib

        from django.conf import settings

        from agentrunner import checks, tracing  # noqa: F401  (checks: registers system checks)

        tracing.configure()  # OpenTelemetry only when OTEL_EXPORTER_OTLP_ENDPOINT is set

        for module in ["agentrunner.agents.builtin", *getattr(settings, "AGENT_MODULES", [])]:
            importlib.import_module(module)
