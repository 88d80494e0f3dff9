"""llmkit.core.secrets: every password, token and key masked in URLs, text and log records."""

from __future__ import annotations

import logging
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmkit.core.secrets import SecretsFilter, is_secret_name, mask_secrets, mask_setting, mask_url
from llmkit.errors import BackendError, ConfigError, UpstreamError

# What a real secret looks like in a URL: unreserved characters and percent escapes, long enough to be
# found, starting with a marker no other part of the test text contains.
SECRET = st.text(string.ascii_letters + string.digits + "-._~%!$'*+,", min_size=6, max_size=40).map(
    lambda s: "Zq" + s
)
SECRET_PARAMS = ["password", "pass", "pwd", "token", "access_token", "api_key", "apikey", "key", "secret"]
SECRET_PARAMS += ["auth", "sig", "signature", "X-Amz-Signature", "client_secret", "db_password", "API_KEY"]


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://:pw@h:6379/0", "redis://:****@h:6379/0"),
        ("redis://user:pw@h:6379/0?prefix=x", "redis://user:****@h:6379/0?prefix=x"),
        ("redis://h:1/0?password=X", "redis://h:1/0?password=****"),
        ("redis://h/0?db=1&password=X&timeout=2", "redis://h/0?db=1&password=****&timeout=2"),
        ("https://h/v1?api_key=sk-1&model=m", "https://h/v1?api_key=****&model=m"),
        ("https://h/x?sig=abc#frag", "https://h/x?sig=****#frag"),
        ("clickhouse://default:p%40ss@h:9000/db", "clickhouse://default:****@h:9000/db"),
        ("redis://:p@ss@h/0", "redis://:****@h/0"),
        ("redis://user@h/0", "redis://user@h/0"),
        ("redis://h:6379/0", "redis://h:6379/0"),
        ("memory://?max_size_mb=256", "memory://?max_size_mb=256"),
        ("https://h/x?max_tokens=5&cache_key=k", "https://h/x?max_tokens=5&cache_key=k"),
        ("https://h/x?password=", "https://h/x?password="),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


@given(secret=SECRET, param=st.sampled_from(SECRET_PARAMS), user=st.sampled_from(["", "u", "default"]))
def test_no_secret_survives_in_a_url(secret: str, param: str, user: str) -> None:
    for url in (
        f"redis://{user}:{secret}@host:6379/0?prefix=p",
        f"redis://host:6379/0?prefix=p&{param}={secret}",
        f"https://host/v1?{param}={secret}&b=2#x",
        f"clickhouse://{user}:{secret}@host:9000/db?{param}={secret}",
    ):
        assert secret not in mask_url(url)
        # And inside any text: an error message, a repr, a log line.
        text = f"cannot reach {url}: refused; cache URL {url!r} (<{url}>)"
        assert secret not in mask_secrets(text)
        assert mask_secrets(mask_secrets(text)) == mask_secrets(text)


@given(st.text(string.ascii_letters + string.digits + "/:.?&=_-", max_size=60))
def test_text_without_secrets_is_unchanged(text: str) -> None:
    names = text.lower().replace("-", "_")
    if any(word in names for word in ("pass", "pwd", "secret", "token", "key", "auth", "sig", "cred")):
        return
    assert mask_secrets(text) == text


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("Authorization: Bearer sk-abc123def", "Authorization: Bearer ****"),
        ("host=h password=hunter2 dbname=x", "host=h password=**** dbname=x"),
        ("{'api_key': 'sk-123456', 'model': 'm'}", "{'api_key': '****', 'model': 'm'}"),
        ("GET /v1/models 200 1.2ms", "GET /v1/models 200 1.2ms"),
        ("unknown key gateway.api_key; valid keys: a, b", "unknown key gateway.api_key; valid keys: a, b"),
        ("max_tokens: 12, usage key: total", "max_tokens: 12, usage key: total"),
        ('{"password": "hunter2", "user": "u"}', '{"password": "****", "user": "u"}'),
        ("LLMKIT_GATEWAY_API_KEY: must be a number", "LLMKIT_GATEWAY_API_KEY: must be a number"),
        ("token=abc&max_tokens=5", "token=****&max_tokens=5"),
    ],
)
def test_mask_secrets_in_text(text: str, masked: str) -> None:
    assert mask_secrets(text) == masked


@pytest.mark.parametrize("name", ["password", "api_key", "gateway.api_key", "OPENAI_API_KEY", "x-auth-token"])
def test_secret_names(name: str) -> None:
    assert is_secret_name(name.rsplit(".", 1)[-1])


@pytest.mark.parametrize("name", ["max_tokens", "cache_key", "keep_alive", "username", "prefix", "timeout"])
def test_names_that_are_no_secrets(name: str) -> None:
    assert not is_secret_name(name)


def test_mask_setting_hides_whole_secrets_and_masks_urls() -> None:
    assert mask_setting("gateway.api_key", "sk-1") == "********"
    assert mask_setting("gateway.api_key", "") == ""
    assert mask_setting("cache.url", "redis://h/0?token=t0k") == "redis://h/0?token=****"
    assert mask_setting("server.workers", 4) == 4


@pytest.mark.parametrize("kind", [ConfigError, BackendError, UpstreamError])
def test_error_messages_are_masked_where_they_are_made(kind: type[Exception]) -> None:
    exc = kind("cannot reach redis://:hunter2@h:1/0?password=hunter3: refused")
    assert "hunter" not in str(exc)
    assert "redis://:****@h:1/0?password=****" in str(exc)


def test_the_log_filter_masks_message_arguments_and_tracebacks() -> None:
    record = logging.LogRecord(
        "x", logging.ERROR, __file__, 1, "connect to %s failed", ("redis://:pw1@h",), None
    )
    try:
        raise OSError("refused by redis://h/0?password=pw2")
    except OSError as exc:
        record.exc_info = (type(exc), exc, exc.__traceback__)
    assert SecretsFilter().filter(record)
    formatter = logging.Formatter("%(message)s")
    line = formatter.format(record)
    assert "pw1" not in line and "pw2" not in line
    assert "redis://:****@h" in line and "Traceback" in line


def test_server_logging_masks_log_lines_and_uncaught_tracebacks(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    from llmkit.cli.serving import configure_logging

    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging("info")
        logging.getLogger("tests.secrets").warning("redis at %s is down", "redis://:pw3@h:1/0")
        try:
            raise ValueError("bad URL https://h/v1?api_key=pw4")
        except ValueError as exc:
            sys.excepthook(type(exc), exc, exc.__traceback__)
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
    err = capsys.readouterr().err
    assert "pw3" not in err and "pw4" not in err
    assert "redis://:****@h:1/0 is down" in err and "ValueError: bad URL https://h/v1?api_key=****" in err
