"""A lean span recorder: spans as slotted objects on the request path, ended into tuples that a thread
hands in batches (marshal, over a pipe) to an exporter process (`llmkit.core.span_exporter`).

The OpenTelemetry SDK costs about 30 µs to make and end a span and 50 µs to encode it, on the event loop's
GIL; here a span costs a few µs and the protobuf work is another process's. What the SDK did that tracing
relies on is kept: random 128/64-bit ids, parent-based ratio sampling (`ParentBased(TraceIdRatioBased)`,
the same bound on the trace id's low 64 bits), W3C traceparent and tracestate, wall-clock start and end.
"""

from __future__ import annotations

import collections
import json
import logging
import marshal
import os
import random
import re
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# opentelemetry.trace.SpanKind and StatusCode values (the exporter process maps them back).
INTERNAL, SERVER, CLIENT = 0, 1, 2
ERROR = 2
TRACE_ID_LIMIT = (1 << 64) - 1
# The thread hands what ended to the exporter this often (the exporter batches again for the collector).
HANDOFF_S = 0.2
_TRACEPARENT = re.compile(
    r"^[ \t]*([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(?:(-.*)|[ \t]*)$"
)
_INVALID_TRACE, _INVALID_SPAN = "0" * 32, "0" * 16
_FRAME = struct.Struct("<I")
_ATTRIBUTE_TYPES = (str, bool, int, float)
# Where this llmkit is, for the exporter process to run the same one.
_SOURCE, _PATH = str(Path(__file__).resolve().parents[2]), "PYTHONPATH"

# (trace id, span id, trace flags) of each span a span is linked to.
Links = tuple[tuple[int, int, int], ...]
_rand = random.getrandbits  # reseeded in a forked worker by the random module itself
_now = time.time_ns


def _span_id() -> int:
    found = _rand(64)
    while not found:
        found = _rand(64)
    return found


class SpanContext:
    """What a traceparent carries: trace and span ids, whether the trace is sampled, tracestate."""

    __slots__ = ("remote", "sampled", "span_id", "trace_id", "tracestate")

    def __init__(
        self, trace_id: int, span_id: int, sampled: bool, remote: bool, tracestate: str = ""
    ) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.sampled = sampled
        self.remote = remote
        self.tracestate = tracestate

    def traceparent(self) -> str:
        """The W3C traceparent header value."""
        return f"00-{self.trace_id:032x}-{self.span_id:016x}-{'01' if self.sampled else '00'}"

    # The bits of opentelemetry.trace.Span's interface llmkit calls; nothing is kept for an unsampled span.
    def is_recording(self) -> bool:
        return False

    def set_attribute(self, key: str, value: Any) -> None:
        pass

    def set_status(self, code: int, description: str = "") -> None:
        pass


class RecordingSpan(SpanContext):
    """A sampled span being recorded: its attributes, status and start; `end()` queues it for export."""

    __slots__ = ("attributes", "description", "kind", "links", "name", "parent_id", "start", "status")

    def __init__(
        self,
        name: str,
        kind: int,
        trace_id: int,
        parent: SpanContext | None,
        attributes: dict[str, Any],
        links: Links = (),
    ) -> None:
        self.trace_id = trace_id
        self.span_id = _span_id()
        self.sampled = True
        self.remote = False
        self.name = name
        self.kind = kind
        self.attributes = attributes
        self.links = links
        self.status = 0
        self.description = ""
        if parent is None:
            self.parent_id, self.tracestate = 0, ""
        else:
            self.parent_id, self.tracestate = parent.span_id, parent.tracestate
            # The exporter flags a remote parent (OTLP's span flags) as the SDK does.
            self.remote = parent.remote
        self.start = _now()

    def is_recording(self) -> bool:
        return True

    def set_attribute(self, key: str, value: Any) -> None:
        self.attributes[key] = value

    def set_status(self, code: int, description: str = "") -> None:
        self.status, self.description = code, description

    def end(self) -> None:
        """Queue the span for export (dropped when MAX_QUEUE spans already wait)."""
        recorder = active
        if recorder is not None:
            recorder.ended(
                (
                    self.name,
                    self.kind,
                    self.trace_id,
                    self.span_id,
                    self.parent_id,
                    self.remote,
                    self.start,
                    _now(),
                    self.attributes,
                    self.status,
                    self.description,
                    self.links,
                    self.tracestate,
                )
            )


# The current span of this task (a request's, or a child's inside it); None outside any.
current: ContextVar[SpanContext | None] = ContextVar("llmkit_span", default=None)


def extract(header: str, tracestate: str | None = None) -> SpanContext | None:
    """The caller's span from a traceparent header (None when it is malformed), as the W3C spec reads it."""
    if len(header) > 512:
        return None
    match = _TRACEPARENT.match(header)
    if match is None:
        return None
    version, trace, span, flags, extra = match.groups()
    if trace == _INVALID_TRACE or span == _INVALID_SPAN or version == "ff" or (version == "00" and extra):
        return None
    state = tracestate if tracestate is not None and len(tracestate) <= 512 else ""
    return SpanContext(int(trace, 16), int(span, 16), bool(int(flags, 16) & 1), True, state)


class Sampler:
    """ParentBased(TraceIdRatioBased(rate)): follow the parent's decision; a new trace is kept when the
    low 64 bits of its (random) trace id fall under rate * 2^64."""

    __slots__ = ("bound",)

    def __init__(self, rate: float) -> None:
        self.bound = round(rate * (TRACE_ID_LIMIT + 1))

    def start(
        self,
        name: str,
        kind: int,
        parent: SpanContext | None,
        attributes: Mapping[str, Any] | None,
        links: Links = (),
    ) -> SpanContext:
        """A recording span, or an unsampled one (ids only, for the traceparent sent on)."""
        if parent is None:
            trace_id = _rand(128)
            while not trace_id:
                trace_id = _rand(128)
            if trace_id & TRACE_ID_LIMIT >= self.bound:
                return SpanContext(trace_id, _span_id(), False, False)
        elif not parent.sampled:
            return SpanContext(parent.trace_id, _span_id(), False, False, parent.tracestate)
        else:
            trace_id = parent.trace_id
        return RecordingSpan(name, kind, trace_id, parent, dict(attributes) if attributes else {}, links)


class Recorder:
    """Spans that ended, handed to the exporter process in batches by a thread of their own."""

    def __init__(self, config: Mapping[str, Any], max_queue: int) -> None:
        self.max_queue = max_queue
        self.dropped = 0
        self._pending: collections.deque[tuple[Any, ...]] = collections.deque()
        self._stop = threading.Event()
        # The exporter starts fresh (no fork of a server with sockets and threads); its stderr is ours.
        self._process = subprocess.Popen(
            [sys.executable, "-m", "llmkit.core.span_exporter", json.dumps(dict(config))],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            env={
                **os.environ,
                "PYTHONPATH": os.pathsep.join(filter(None, (_SOURCE, os.environ.get("PYTHONPATH")))),
            },
        )
        self._pipe = self._process.stdin
        self._thread = threading.Thread(target=self._run, name="llmkit-span-handoff", daemon=True)
        self._thread.start()

    def ended(self, row: tuple[Any, ...]) -> None:
        """Queue one ended span (dropped past max_queue: the exporter is stuck or gone)."""
        if len(self._pending) < self.max_queue:
            self._pending.append(row)
        else:
            self.dropped += 1

    def _run(self) -> None:
        while not self._stop.wait(HANDOFF_S):
            self._hand_off()

    def _hand_off(self) -> None:
        pending = self._pending
        rows = [pending.popleft() for _ in range(len(pending))]
        if not rows or self._pipe is None:
            return
        try:
            data = marshal.dumps(rows)
        except ValueError:  # an attribute value marshal cannot carry: those spans lose that attribute
            data = marshal.dumps([_cleaned(row) for row in rows])
        try:
            self._pipe.write(_FRAME.pack(len(data)) + data)
            self._pipe.flush()
        except (BrokenPipeError, OSError, ValueError):
            log.warning("tracing: the span exporter process is gone; spans are dropped from now on")
            self._pipe = None

    def close(self, timeout: float) -> None:
        """Hand off what is left, then let the exporter send it (waiting at most `timeout` seconds)."""
        self._stop.set()
        self._thread.join(timeout)
        if not self._thread.is_alive():  # else it is still writing (a stalled exporter): leave the rest
            self._hand_off()
        if self._pipe is not None:
            try:
                self._pipe.close()
            except OSError:
                pass
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


def _cleaned(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """The row with the attribute values the SDK would refuse left out (only str, bool, int, float or a
    sequence of them)."""
    attributes = {key: value for key, value in row[8].items() if _valid(value)}
    return (*row[:8], attributes, *row[9:])


def _valid(value: Any) -> bool:
    if isinstance(value, _ATTRIBUTE_TYPES):
        return True
    return isinstance(value, (list, tuple)) and all(isinstance(v, _ATTRIBUTE_TYPES) for v in value)


# The recorder of this process while tracing is on.
active: Recorder | None = None
