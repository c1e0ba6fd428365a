"""Test settings: the real settings with short engine timings, so recovery tests take seconds.

Worker subprocesses started by the tests use this module too.
"""

import os

for name, value in {
    "SECRET_KEY": "test-only-secret-key-not-for-deployment",
    "DEBUG": "0",
    "SECURE_SSL_REDIRECT": "0",
    "LOG_FORMAT": "console",
    "RUN_LEASE_SECONDS": "3",
    "ENGINE_TICK_SECONDS": "0.25",
    "CANCEL_POLL_SECONDS": "0.2",
    "SLOT_START_DEADLINE_SECONDS": "60",
    "STEP_REDISPATCH_SECONDS": "60",
    "Q_POLL": "0.02",
    "HEALTH_CACHE_SECONDS": "0",  # tests change what health reports and read it at once; its cache is tested
    "ALLOWED_HOSTS": "127.0.0.1,localhost,testserver",
}.items():
    os.environ.setdefault(name, value)

from agentrunner.settings import *  # noqa: E402,F403

AGENT_MODULES = [*AGENT_MODULES, "tests.fake_agents"]  # noqa: F405
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast user creation in tests
