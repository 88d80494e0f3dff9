"""The span exporter process (`python -m llmkit.core.span_exporter CONFIG`): reads batches of ended spans
on stdin (a 4-byte length, then marshal'd tuples from `span_recorder`) and sends them to the collector
through the OpenTelemetry SDK's BatchSpanProcessor and OTLP/HTTP exporter. Ends at EOF (its server
stopped or died), after exporting what it holds.

The protobuf encoding and the HTTP export are the costly part of tracing: here they run on a GIL, and
usually a core, that is not the server's event loop.
"""

from __future__ import annotations

import json
import logging
import marshal
import signal
import struct
import sys
from typing import Any

EXPORTER_LOGGER = "opentelemetry.exporter.otlp.proto.http.trace_exporter"
_FRAME = struct.Struct("<I")


class Sparse(logging.Filter):
    """Lets one record through per `interval` seconds, drops the others."""

    def __init__(self, interval: float) -> None:
        super().__init__()
        self.interval = interval
        self.last = -interval

    def filter(self, record: logging.LogRecord) -> bool:
        if record.created - self.last < self.interval:
            return False
        self.last = record.created
        record.msg = f"tracing: {record.msg} (spans are dropped while export fails; said once a minute)"
        return True


def run(config: dict[str, Any]) -> None:
    """Export what arrives on stdin until EOF."""
    from opentelemetry.attributes import BoundedAttributes
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

    logging.getLogger(EXPORTER_LOGGER).addFilter(Sparse(config["log_interval"]))
    resource = Resource.create(config["resource"])
    scope = InstrumentationScope("llmkit", config["version"])
    timeout = config["timeout"]
    processor = BatchSpanProcessor(
        OTLPSpanExporter(endpoint=config["url"], timeout=timeout),
        max_queue_size=config["max_queue"],
        schedule_delay_millis=500,
        export_timeout_millis=timeout * 1000,
    )
    sampled, unsampled = TraceFlags(TraceFlags.SAMPLED), TraceFlags(TraceFlags.DEFAULT)
    kinds = {kind.value: kind for kind in SpanKind}
    unset = Status(StatusCode.UNSET)
    states: dict[str, TraceState] = {}

    def state(header: str) -> TraceState | None:
        if not header:
            return None
        found = states.get(header)
        if found is None:
            if len(states) > 256:  # callers' tracestates, parsed once each while they repeat
                states.clear()
            found = states[header] = TraceState.from_header([header])
        return found

    def readable(row: tuple[Any, ...]) -> ReadableSpan:
        name, kind, trace_id, span_id, parent_id, remote, start, end, attributes, status, why, links, ts = row
        trace_state = state(ts)
        parent = SpanContext(trace_id, parent_id, remote, sampled, trace_state) if parent_id else None
        return ReadableSpan(
            name=name,
            context=SpanContext(trace_id, span_id, False, sampled, trace_state),
            parent=parent,
            resource=resource,
            # As the SDK's own spans: invalid values dropped (with a warning), at most 128 attributes.
            attributes=BoundedAttributes(128, attributes, immutable=True),
            links=[
                Link(SpanContext(t, s, True, sampled if flags & 1 else unsampled)) for t, s, flags in links
            ],
            kind=kinds[kind],
            status=Status(StatusCode(status), why or None) if status else unset,
            start_time=start,
            end_time=end,
            instrumentation_scope=scope,
        )

    stdin = sys.stdin.buffer
    while True:
        head = stdin.read(_FRAME.size)
        if len(head) < _FRAME.size:
            break
        size = _FRAME.unpack(head)[0]
        data = stdin.read(size)
        if len(data) < size:  # the server died in the middle of a batch: export what came whole
            break
        for row in marshal.loads(data):
            processor.on_end(readable(row))
    processor.shutdown()


def main() -> None:
    # Ctrl-C (or a service manager's SIGTERM) reaches the whole process group: the server decides when
    # this process ends, by closing its end of the pipe once it has handed over its last spans.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    run(json.loads(sys.argv[1]))


if __name__ == "__main__":
    main()
