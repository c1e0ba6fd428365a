"""Optional OpenTelemetry (issue 14): off unless OTEL_EXPORTER_OTLP_ENDPOINT is set; on, a real gunicorn sends
its request and query spans to an OTLP/HTTP receiver of our own on 127.0.0.1."""

import json
import os
import subprocess
import sys
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.db import connection
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from rest_framework.authtoken.models import Token

from tests.conftest import BASE_DIR, join, wait_for


def test_unset__nothing_is_instrumented_or_exported():
    """No instrumentation, exporter or SDK tracer is loaded, and requests pass no OpenTelemetry middleware.

    (redis-py imports OpenTelemetry's API for hooks of its own when the package is installed; they stay inert.)
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(DJANGO_SETTINGS_MODULE="tests.settings", PYTHONPATH=str(BASE_DIR))
    code = (
        "import django, sys, json; django.setup(); from django.conf import settings; "
        "from opentelemetry import trace; "
        "loaded = ('opentelemetry.instrumentation', 'opentelemetry.sdk.trace', 'opentelemetry.exporter'); "
        "print(json.dumps({'modules': sorted(m for m in sys.modules if m.startswith(loaded)), "
        "'middleware': [m for m in settings.MIDDLEWARE if 'opentelemetry' in m], "
        "'provider': type(trace.get_tracer_provider()).__name__}))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=BASE_DIR, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    state = json.loads(out.stdout.strip().splitlines()[-1])
    assert state == {"modules": [], "middleware": [], "provider": "ProxyTracerProvider"}


class Receiver(ThreadingHTTPServer):
    """An OTLP/HTTP trace receiver: keeps every span it is sent."""

    def __init__(self):
        self.spans: list = []
        super().__init__(("127.0.0.1", 0), ReceiverHandler)


class ReceiverHandler(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path == "/v1/traces":
            export = ExportTraceServiceRequest.FromString(body)
            for resource in export.resource_spans:
                service = {a.key: a.value.string_value for a in resource.resource.attributes}["service.name"]
                for scope in resource.scope_spans:
                    for span in scope.spans:
                        attributes = {a.key: a.value.string_value or a.value.int_value for a in span.attributes}
                        self.server.spans.append((service, span.name, attributes))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.mark.cluster
@pytest.mark.django_db(transaction=True)
def test_set__a_requests_span_and_its_queries_reach_the_collector(web, django_user_model):
    receiver = Receiver()
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    user = django_user_model.objects.create_user("traced")
    join(user)
    token = Token.objects.create(user=user).key
    port = web(
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{receiver.server_address[1]}",
        OTEL_SERVICE_NAME="agent-runner-test",
        OTEL_BSP_SCHEDULE_DELAY="100",
    )
    try:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/v1/runs", headers={"Authorization": f"Token {token}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200

        def request_span():
            return [s for s in receiver.spans if s[2].get("http.route") == "api/v1/runs"]

        [(service, name, attributes)] = wait_for(request_span, timeout=15, message="the request's span")
        assert service == "agent-runner-test"
        assert name == "GET api/v1/runs"
        assert attributes.get("http.response.status_code", attributes.get("http.status_code")) == 200
        if connection.vendor == "postgresql":
            queries = wait_for(
                lambda: [s for s in receiver.spans if s[2].get("db.system") == "postgresql"],
                timeout=15,
                message="psycopg's spans",
            )
            assert any("SELECT" in name for _, name, _ in queries), queries
    finally:
        receiver.shutdown()
