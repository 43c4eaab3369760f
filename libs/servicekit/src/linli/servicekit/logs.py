"""JSON logs that carry trace ids and never personal data.

Log records name ids (need id, event id, community), never names, phones or
addresses; payloads are never logged. The trace and span ids come from the current
OpenTelemetry span, so a log line can be found from a trace and back.
"""

from __future__ import annotations

import logging
import sys

from opentelemetry import trace
from pythonjsonlogger.json import JsonFormatter


class _TraceContextFilter(logging.Filter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            record.trace_id = format(ctx.trace_id, "032x")
            record.span_id = format(ctx.span_id, "016x")
        record.service = self._service
        return True


def configure_logging(service: str, level: str = "INFO", *, json: bool = True) -> None:
    """Route every logger to stderr, as JSON lines with trace ids."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_TraceContextFilter(service))
    if json:
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Per-message framework and access logs are off the hot path; errors still show.
    for noisy in ("uvicorn.access", "faststream", "faststream.access", "nats"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
