"""Optional OpenTelemetry tracing: Django requests and psycopg queries, exported over OTLP/HTTP.

On only when OTEL_EXPORTER_OTLP_ENDPOINT is set (the exporter's own standard variable, as are OTEL_SERVICE_NAME,
OTEL_EXPORTER_OTLP_HEADERS and OTEL_BSP_*). Unset, nothing of OpenTelemetry is imported, so it costs nothing.
Every process configures it for itself when Django starts (`AgentRunnerConfig.ready`): each web process (the
batch span processor starts its thread again after gunicorn's fork) and each worker process (their psycopg
queries; the steps' log lines carry the run's request_id, agentrunner.logging).
"""

from __future__ import annotations

import os

DEFAULT_SERVICE_NAME = "agent-runner"


def enabled() -> bool:
    return bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


def configure() -> bool:
    """Instrument Django and psycopg and export spans if OTEL_EXPORTER_OTLP_ENDPOINT is set; say whether it did."""
    if not enabled():
        return False
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.django import DjangoInstrumentor
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return True  # configured already (a second django.setup() in one process)
    service = os.environ.get("OTEL_SERVICE_NAME", DEFAULT_SERVICE_NAME)
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))  # endpoint etc. from OTEL_* variables
    trace.set_tracer_provider(provider)
    DjangoInstrumentor().instrument()
    PsycopgInstrumentor().instrument(enable_commenter=False)
    return True
