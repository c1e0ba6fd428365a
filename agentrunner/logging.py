"""Structured logging: JSON lines to stdout, or a console renderer for humans."""

import structlog

REQUEST_ID_MAX_CHARS = 64  # Run.request_id's column; a client's X-Request-ID may be longer


def current_request_id() -> str:
    """The id django-structlog bound for the request being served ("" outside a request)."""
    value = structlog.contextvars.get_contextvars().get("request_id")
    return str(value)[:REQUEST_ID_MAX_CHARS] if value else ""


def build_logging(*, level: str, fmt: str) -> dict:
    """Configure structlog and return Django's LOGGING dict."""
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )
    renderer = structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "structured": {
                "()": structlog.stdlib.ProcessorFormatter,
                "processors": [
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info,
                    renderer,
                ],
                "foreign_pre_chain": shared,
            }
        },
        # A 5xx answered on purpose (a health report's 503) is in `request_finished` already; an exception's
        # traceback is the one thing Django's own line adds.
        "filters": {"raised": {"()": "django.utils.log.CallbackFilter", "callback": _raised}},
        "handlers": {"stdout": {"class": "logging.StreamHandler", "formatter": "structured"}},
        "root": {"handlers": ["stdout"], "level": level},
        "loggers": {
            # One line per request: django-structlog's `request_finished` (status, request, user, IP, request
            # id). Django's own copy of each 4xx ("Bad Request: /path") says less, and in DEBUG it printed
            # twice (its console handler, then ours): no handler of its own, and 5xx only (with traceback).
            "django": {"handlers": [], "level": "INFO", "propagate": True},
            "django.request": {"level": "ERROR", "filters": ["raised"]},
            "django.db.backends": {"level": "INFO"},
            # Their DEBUG lines carry full URLs and response headers (cookies): never below INFO.
            "httpx": {"level": "WARNING"},
            "httpcore": {"level": "WARNING"},
        },
    }


def _raised(record) -> bool:
    return bool(record.exc_info)
