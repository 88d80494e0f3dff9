"""The access log: one line per request, collected on the request path and written in batches.

A `logging` call costs a request ~10 µs (a LogRecord, filters, a lock, a formatter, a write), a third of
what a simulator answer costs in all. Here a request only appends a tuple; the lines are formatted and
written together, FLUSH_S after the first one waits or as soon as MAX_PENDING wait, and when the app stops.

Lines look exactly as the `logging` handler that `configure_logging` installs would write them
(LOG_FORMAT), secrets masked the same way, so log readers see no difference. When logging goes anywhere
else (pytest's capture, an application embedding an llmkit app), each request is logged through the
`llmkit.access` logger at once, as before: the handlers there decide what a line looks like.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import sys
import time
from typing import IO

from llmkit.core.secrets import SecretsFilter, mask_secrets, may_hold_secrets

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s pid=%(process)d [%(request_id)s] %(message)s"
# The name configure_logging gives its handler: the one whose lines this module may write itself.
STDERR_HANDLER = "llmkit-stderr"
ACCESS_LOGGER = "llmkit.access"
FLUSH_S = 0.2
MAX_PENDING = 2048
# Writes of at most this many bytes reach a pipe whole (PIPE_BUF): workers sharing stderr never split a line.
_CHUNK = 4096
# (time.time(), method, path, status, elapsed seconds, request id)
Entry = tuple[float, str, str, int, float, str]
# The most (method, path) pairs remembered as plain (nothing secret-looking in them).
_MAX_PLAIN = 4096

access_logger = logging.getLogger(ACCESS_LOGGER)


def stderr_handler(stream: IO[str] | None = None) -> logging.Handler:
    """llmkit's log handler: LOG_FORMAT lines on stderr with the request id, secrets masked."""
    from llmkit.core.http import RequestIdFilter

    handler = logging.StreamHandler(stream or sys.stderr)
    handler.set_name(STDERR_HANDLER)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(RequestIdFilter())
    # The last line of defence: a secret that reached a log record (a driver's message) is masked here.
    handler.addFilter(SecretsFilter())
    return handler


def _direct_stream() -> logging.StreamHandler[IO[str]] | None:
    """The stream handler this module writes to itself, when it is the only place access lines go."""
    logger = access_logger
    if logger.handlers or logger.filters or not logger.propagate:
        return None
    parent = logger.parent
    while parent is not None and parent is not logging.root:
        if parent.handlers or parent.filters or not parent.propagate:
            return None
        parent = parent.parent
    handlers = logging.root.handlers
    if len(handlers) != 1 or logging.root.filters:
        return None
    handler = handlers[0]
    if handler.get_name() != STDERR_HANDLER or not isinstance(handler, logging.StreamHandler):
        return None
    if handler.level > logging.INFO:
        return None
    return handler


def _middle(pid: int) -> str:
    return f" INFO {ACCESS_LOGGER} pid={pid} ["


class AccessLog:
    """The access lines of one process, written in batches (see the module's docstring)."""

    def __init__(self) -> None:
        self.pending: list[Entry] = []
        self._timer: asyncio.TimerHandle | None = None
        self._second = -1
        self._stamp = ""
        self._pid = os.getpid()
        # What every line has between its time and its request id.
        self._middle = _middle(self._pid)
        self.written = 0
        # (method, path) pairs seen in lines with nothing that looks secret (see _may_hold_secrets).
        self._plain: set[tuple[str, str]] = set()

    def add(self, method: str, path: str, status: int, elapsed: float, request_id: str) -> None:
        """Log one request (when `llmkit.access` logs at INFO): at once, or in the next batch."""
        if not access_logger.isEnabledFor(logging.INFO):
            return
        pending = self.pending
        if pending:
            pending.append((time.time(), method, path, status, elapsed, request_id))
            if len(pending) >= MAX_PENDING:
                self.flush()
            return
        # The first line of a batch: where do lines go? (flush checks again before it writes)
        if _direct_stream() is None:
            self._record(time.time(), method, path, status, elapsed, request_id)
            return
        pending.append((time.time(), method, path, status, elapsed, request_id))
        try:
            self._timer = asyncio.get_running_loop().call_later(FLUSH_S, self.flush)
        except RuntimeError:  # no running loop: nothing would flush later
            self.flush()

    def flush(self) -> None:
        """Write every waiting line now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        entries, self.pending = self.pending, []
        if not entries:
            return
        handler = _direct_stream()
        if handler is None:
            for entry in entries:
                self._record(*entry)
            return
        if os.getpid() != self._pid:  # a forked worker: its lines carry its own pid
            self._pid = os.getpid()
            self._middle = _middle(self._pid)
        text = "".join([self._line(*entry) for entry in entries])
        if self._may_hold_secrets(entries):
            text = mask_secrets(text)
        handler.acquire()
        try:
            stream = handler.stream
            start = 0
            while start < len(text):
                end = start + _CHUNK
                if end < len(text):
                    cut = text.rfind("\n", start, end)
                    end = cut + 1 if cut >= start else end
                stream.write(text[start:end])
                stream.flush()
                start = end
        except (OSError, ValueError):
            # Like logging's handlers: a log write that fails (a closed stderr) never fails the server.
            pass
        finally:
            handler.release()
        self.written += len(entries)

    def _may_hold_secrets(self, entries: list[Entry]) -> bool:
        """False when the lines of `entries` hold nothing mask_secrets would mask, checked on their
        request ids, methods and paths only: the rest of a line (time, level, logger, pid, status,
        duration) has nothing that looks secret, and nothing secret-looking spans two fields but a
        field's own trailing space ("Basic "). A (method, path) pair found plain is not checked again."""
        plain = self._plain
        new = [(e[1], e[2]) for e in entries if (e[1], e[2]) not in plain]
        for method, path in dict.fromkeys(new):
            if may_hold_secrets(f"{method} {path} "):
                return True
            if len(plain) >= _MAX_PLAIN:
                plain.clear()
            plain.add((method, path))
        return may_hold_secrets(" ".join([e[5] for e in entries]) + " ")

    def _line(self, created: float, method: str, path: str, status: int, elapsed: float, rid: str) -> str:
        second = int(created)
        if second != self._second:
            # logging.Formatter.formatTime's default: local time to the second, then ",mmm".
            self._second, self._stamp = second, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        msecs = int((created - second) * 1000)
        return (
            f"{self._stamp},{msecs:03d}{self._middle}{rid}] {method} {path} {status} {elapsed * 1000:.1f}ms\n"
        )

    @staticmethod
    def _record(created: float, method: str, path: str, status: int, elapsed: float, rid: str) -> None:
        # The id rides on the record (`%(request_id)s` in the format), not in every message.
        access_logger.info("%s %s %d %.1fms", method, path, status, elapsed * 1000, extra={"request_id": rid})


# One per process: every app's route wrapper adds to it (core.http), and it is flushed when an app stops
# and when the interpreter exits.
access_log = AccessLog()
atexit.register(access_log.flush)
