"""The batched access log: lines exactly as logging would write them, later, in whole-line writes."""

from __future__ import annotations

import asyncio
import io
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmkit.core import access_log as access_module
from llmkit.core.access_log import ACCESS_LOGGER, LOG_FORMAT, AccessLog, stderr_handler
from llmkit.core.secrets import mask_secrets

LINE = re.compile(
    r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO llmkit\.access pid=\d+ \[(?P<rid>[^\]]*)\] "
    r"(?P<message>.*)"
)


class Writes(io.StringIO):
    """A stream that remembers each write call."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def write(self, text: str) -> int:
        self.calls.append(text)
        return super().write(text)


@contextmanager
def only_llmkit_handler() -> Iterator[Writes]:
    """llmkit's stderr handler as the only root handler, writing to a stream the test reads. Entered in the
    test's body: pytest adds its own capture handler to the root logger once the call phase starts."""
    out = Writes()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    root.handlers[:] = [stderr_handler(out)]
    root.setLevel(logging.INFO)
    try:
        yield out
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def test_lines_wait_for_the_flush_and_then_read_as_the_logging_handler_writes_them() -> None:
    with only_llmkit_handler() as stream:
        log = AccessLog()
        log.pending.append((1_700_000_000.25, "GET", "/health", 200, 0.00123, "rid-1"))
        log.add("POST", "/v1/chat/completions", 429, 0.5, "rid-2")
        assert stream.getvalue() == ""  # nothing until the flush
        log.flush()
        first, second = stream.getvalue().splitlines()
        # The same line the handler's own formatter makes of an equal record.
        record = logging.LogRecord(ACCESS_LOGGER, logging.INFO, __file__, 1, "%s %s %d %.1fms", None, None)
        record.created, record.msecs = 1_700_000_000.25, 250.0
        record.args = ("GET", "/health", 200, 1.23)
        record.request_id = "rid-1"
        assert first == logging.Formatter(LOG_FORMAT).format(record)
        match = LINE.fullmatch(second)
        assert match is not None, second
        assert match["rid"] == "rid-2" and match["message"] == "POST /v1/chat/completions 429 500.0ms"
        assert log.written == 2 and log.pending == []


async def test_a_batch_is_written_by_itself_shortly_after_its_first_line() -> None:
    with only_llmkit_handler() as stream:
        log = AccessLog()
        log.add("GET", "/a", 200, 0.001, "r1")
        log.add("GET", "/b", 200, 0.001, "r2")
        assert stream.getvalue() == ""
        for _ in range(50):
            await asyncio.sleep(access_module.FLUSH_S / 4)
            if stream.getvalue():
                break
        assert [LINE.fullmatch(line)["message"] for line in stream.getvalue().splitlines()] == [  # type: ignore[index]
            "GET /a 200 1.0ms",
            "GET /b 200 1.0ms",
        ]
        assert len(stream.calls) == 1  # one write for the batch


async def test_a_full_batch_is_written_at_once_in_whole_lines_of_at_most_a_pipe_buffer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with only_llmkit_handler() as stream:
        monkeypatch.setattr(access_module, "MAX_PENDING", 300)
        log = AccessLog()
        for i in range(299):
            log.add("GET", f"/items/{i}", 200, 0.002, f"id-{i}")
        assert stream.getvalue() == "" and len(log.pending) == 299
        log.add("GET", "/items/299", 200, 0.002, "id-299")
        assert log.pending == [] and log.written == 300
        lines = stream.getvalue().splitlines()
        assert [LINE.fullmatch(line)["rid"] for line in lines] == [f"id-{i}" for i in range(300)]  # type: ignore[index]
        assert len(stream.calls) > 1
        assert all(len(call.encode()) <= 4096 and call.endswith("\n") for call in stream.calls)


async def test_secrets_in_a_path_are_masked() -> None:
    with only_llmkit_handler() as stream:
        log = AccessLog()
        log.add("GET", "/proxy/redis://:hunter2@db:6379/0", 404, 0.001, "r")
        log.flush()
        assert "hunter2" not in stream.getvalue()
        assert "redis://:****@db:6379/0" in stream.getvalue()


async def test_nothing_is_logged_below_info() -> None:
    with only_llmkit_handler() as stream:
        logging.getLogger().setLevel(logging.WARNING)
        log = AccessLog()
        log.add("GET", "/health", 200, 0.001, "r")
        log.flush()
        assert stream.getvalue() == "" and log.written == 0


def test_elsewhere_each_request_is_a_log_record_at_once(caplog: pytest.LogCaptureFixture) -> None:
    # pytest's handler (or an embedding app's) decides what lines look like: records go to it unbatched.
    log = AccessLog()
    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
        log.add("DELETE", "/x", 204, 0.0042, "rec-1")
        records = [r for r in caplog.records if r.name == ACCESS_LOGGER]
        assert [r.getMessage() for r in records] == ["DELETE /x 204 4.2ms"]
        assert records[0].request_id == "rec-1"  # type: ignore[attr-defined]
    assert log.pending == []


async def test_a_batch_whose_handler_was_replaced_goes_to_the_new_handlers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with only_llmkit_handler() as stream:
        log = AccessLog()
        log.add("GET", "/late", 200, 0.001, "r")
        root = logging.getLogger()
        root.handlers[:] = [caplog.handler]
        log.flush()
        assert stream.getvalue() == ""
        assert [r.getMessage() for r in caplog.records if r.name == ACCESS_LOGGER] == ["GET /late 200 1.0ms"]


# Pieces of request ids, methods and paths that do and do not look secret to mask_secrets.
_PIECES = ["/v1/chat", "token", "Basic", "basic", " ", "x", "://", "u:pw@h", "?password=1", "Bearer", "KEY"]
_PIECES += ["secret=", "pwd", "passw", "İ", "Σ", "/", "=", ":", "@", "]", "\u212a"]
_FIELD = st.lists(st.sampled_from(_PIECES), max_size=5).map("".join)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_FIELD, _FIELD, _FIELD), min_size=1, max_size=4))
def test_a_batch_skips_masking_only_when_masking_would_change_nothing(fields: list[tuple[str, ...]]) -> None:
    log = AccessLog()
    entries = [(1_700_000_000.25, method, path, 200, 0.0012, rid or "r") for method, path, rid in fields]
    text = "".join([log._line(*entry) for entry in entries])
    if not log._may_hold_secrets(entries):
        assert mask_secrets(text) == text
