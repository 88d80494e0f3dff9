"""Secrets out of text: passwords, tokens and keys masked in URLs, messages and log records."""

from __future__ import annotations

import logging
import re
from urllib.parse import unquote

MASK = "****"

# Query parameters whose value is a credential, compared lower-cased with "-" read as "_".
SECRET_PARAMS = frozenset(
    {
        "password",
        "passwd",
        "pass",
        "pwd",
        "token",
        "access_token",
        "refresh_token",
        "id_token",
        "auth_token",
        "api_key",
        "apikey",
        "key",
        "secret",
        "client_secret",
        "auth",
        "authorization",
        "sig",
        "signature",
        "x_amz_signature",
        "x_amz_credential",
        "x_amz_security_token",
        "credential",
        "credentials",
        "session_token",
    }
)
# Name segments (split on "_") that make any name a secret: db_password, github_token, client_secret.
_SECRET_SEGMENTS = frozenset({"password", "passwd", "pwd", "secret", "token", "apikey", "credential"})
# Name endings that do: openai_api_key, aws_secret_access_key, private_key (cache_key or sort_key do not).
_SECRET_ENDINGS = ("api_key", "access_key", "private_key", "secret_key", "password", "passwd")

# A URL with an authority, up to whitespace, a double quote or a bracket; a password may hold "'" or "(",
# so those stay in, and trailing punctuation of the sentence around it is cut off (_mask_url_in_text).
_URL_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s\"<>`\[\]{}]+")
_TRAILING = "').,;:!"
# Greedy up to the last "@" of the authority, as urlsplit reads it: a password may hold an unencoded "@".
_USERINFO_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*://)([^/?#]*)@")
_PARAM_RE = re.compile(r"([?&;])([^=&;#]+)=([^&;#]*)")
_BEARER_RE = re.compile(r"\b(Bearer|Basic|Token)\s+(?!\*\*\*\*)[A-Za-z0-9._~+/=\-]{4,}", re.IGNORECASE)
# `password=x` (a DSN) and `'api_key': 'x'` (a repr, JSON) in free text, for names that are secrets on
# their own ("key" alone is not); an unquoted `name: ...` is prose ("LLMKIT_GATEWAY_API_KEY: must be").
_ASSIGN_RE = re.compile(
    r"(\b[A-Za-z_][A-Za-z0-9_\-]*\s*=\s*['\"]?|(['\"])[A-Za-z_][A-Za-z0-9_\-]*\2\s*:\s*['\"]?)"
    r"([^\s'\",&;)}\]]+)"
)
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")
# One cheap test before the regexes: most log lines (the access log) contain none of these. Searched in
# the lower-cased text: an IGNORECASE search costs ~13x more (~200 ns a character).
_TRIGGER_RE = re.compile(r"://|bearer|basic |token|passw|pwd|secret|key|credential")


def _normal(name: str) -> str:
    return unquote(name).strip().lower().replace("-", "_")


def _secret_on_its_own(lowered: str) -> bool:
    if lowered.endswith(_SECRET_ENDINGS) or lowered == "apikey":
        return True
    return any(segment in _SECRET_SEGMENTS for segment in lowered.split("_"))


def is_secret_name(name: str) -> bool:
    """Whether a URL parameter or setting called `name` holds a credential."""
    lowered = _normal(name)
    return lowered in SECRET_PARAMS or _secret_on_its_own(lowered)


def _mask_param(match: re.Match[str]) -> str:
    sep, name, value = match.group(1), match.group(2), match.group(3)
    return f"{sep}{name}={MASK}" if value and is_secret_name(name) else match.group(0)


def mask_url(url: str) -> str:
    """`redis://u:pw@h/0?password=x&db=1` -> `redis://u:****@h/0?password=****&db=1`; the rest verbatim."""
    masked = _USERINFO_RE.sub(_mask_userinfo, url, count=1)
    if "?" in masked or ";" in masked:
        head, sep, rest = masked.partition("?")
        # Parameters live after "?"; a ";" before it is part of a path (or a JDBC-style parameter list).
        tail = _PARAM_RE.sub(_mask_param, sep + rest) if sep else ""
        head = _PARAM_RE.sub(_mask_param, head) if ";" in head else head
        masked = head + tail
    return masked


def _mask_userinfo(match: re.Match[str]) -> str:
    scheme, userinfo = match.group(1), match.group(2)
    user, colon, password = userinfo.partition(":")
    # A userinfo without ":" is a user name (redis://user@h), kept: it says who connects, not how.
    return f"{scheme}{user}:{MASK}@" if colon and password else match.group(0)


def _mask_url_in_text(match: re.Match[str]) -> str:
    url = match.group(0)
    stripped = url.rstrip(_TRAILING)
    return mask_url(stripped) + url[len(stripped) :]


def may_hold_secrets(text: str) -> bool:
    """False when `mask_secrets(text)` is sure to return `text` unchanged (nothing in it looks secret)."""
    return _TRIGGER_RE.search(text.lower()) is not None


def mask_secrets(text: str) -> str:
    """`text` with every URL's credentials, Bearer tokens and `password=...` assignments masked."""
    if not _TRIGGER_RE.search(text.lower()):
        return text
    text = _URL_RE.sub(_mask_url_in_text, text)
    text = _BEARER_RE.sub(lambda m: f"{m.group(1)} {MASK}", text)
    return _ASSIGN_RE.sub(_mask_assignment, text)


def _mask_assignment(match: re.Match[str]) -> str:
    lead, value = match.group(1), match.group(3)
    name = _NAME_RE.search(lead)
    if value == MASK or name is None or not _secret_on_its_own(_normal(name.group(0))):
        return match.group(0)
    return f"{lead}{MASK}"


def mask_setting(key: str, value: object) -> object:
    """A setting's value for display: whole secrets (`gateway.api_key`) hidden, URLs masked."""
    leaf = key.rsplit(".", 1)[-1]
    if isinstance(value, str) and value and is_secret_name(leaf):
        return "********"
    if isinstance(value, str):
        return mask_secrets(value)
    return value


class SecretsFilter(logging.Filter):
    """Masks secrets in every record a handler writes: the message, its arguments and its traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_secrets(message)
        if masked != message:
            # The formatted text replaces msg and args, so the formatter does not format it again.
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            # Exception messages (a driver's, with the URL it was given) are part of the line too.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_secrets(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_secrets(record.stack_info)
        return True
