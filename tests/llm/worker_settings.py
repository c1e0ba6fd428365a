"""Settings of the worker processes of the LLM cluster tests: the test settings, with a team's LLM request limit
counted per 2 s instead of per minute, so that a test of several windows takes seconds."""

from tests.settings import *  # noqa: F403

LLM_REQUESTS_WINDOW_SECONDS = 2.0
