from django.apps import AppConfig


class AgentRunnerConfig(AppConfig):
    name = "agentrunner"
    verbose_name = "LLM"  # its models in the admin: LLM calls, monthly budgets, provider breakers

    def ready(self):
        import importlib

        from django.conf import settings

        from agentrunner import checks  # noqa: F401  (registers system checks)

        for module in ["agentrunner.agents.builtin", *getattr(settings, "AGENT_MODULES", [])]:
            importlib.import_module(module)
