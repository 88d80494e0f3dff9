"""Standard Webhooks v1 signatures (https://www.standardwebhooks.com): what a delivery carries, and `verify`
for a Python receiver.

A delivery has `webhook-id` (the same on every retry: receivers deduplicate by it), `webhook-timestamp`
(epoch seconds of this attempt) and `webhook-signature`:
`v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, one per valid secret, space-separated (while a
rotated secret is still valid, both sign). A secret is `whsec_<base64 of 24..64 bytes>` (the key is the
decoded bytes, as the spec's libraries read it); any other text of 8 characters or more is taken as its
UTF-8 bytes (only hand-written receivers accept those).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Iterable, Mapping

PREFIX = "whsec_"
SECRET_BYTES = 32
MIN_KEY_BYTES = 24
MAX_KEY_BYTES = 64
MIN_TEXT_SECRET = 8
MAX_TEXT_SECRET = 256
TOLERANCE_S = 300
ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"


class InvalidSignature(Exception):
    """The delivery is not signed by the secret (or too old, or too far ahead): refuse it."""


def new_secret() -> str:
    """A fresh `whsec_` secret of 32 random bytes."""
    return PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def secret_key(secret: str) -> bytes:
    """The HMAC key of a secret; ValueError saying what a valid one looks like."""
    if secret.startswith(PREFIX):
        try:
            key = base64.b64decode(secret[len(PREFIX) :], validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("after whsec_ must come base64 (A-Z, a-z, 0-9, +, /, = padding)") from None
        if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
            raise ValueError(
                f"a whsec_ secret holds {MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes; this one {len(key)}"
            )
        return key
    if not MIN_TEXT_SECRET <= len(secret) <= MAX_TEXT_SECRET:
        raise ValueError(
            f"whsec_<base64 of {MIN_KEY_BYTES}-{MAX_KEY_BYTES} bytes>, or {MIN_TEXT_SECRET} to "
            f"{MAX_TEXT_SECRET} characters of text; leave it out to have one generated"
        )
    return secret.encode("utf-8")


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64 signature>` of one message under one secret."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signature_header(secrets_: Iterable[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value: one signature per secret, space-separated."""
    return " ".join(sign(s, msg_id, timestamp, body) for s in secrets_)


def signed_headers(secrets_: Iterable[str], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers of a delivery."""
    return {
        ID_HEADER: msg_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: signature_header(secrets_, msg_id, timestamp, body),
    }


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    tolerance: float = TOLERANCE_S,
    now: float | None = None,
) -> None:
    """Check a delivery as a receiver: InvalidSignature unless one `v1` signature is the secret's and the
    timestamp is within `tolerance` seconds of now. Header names in any case; signatures compared in
    constant time."""
    lowered = {k.lower(): v for k, v in headers.items()}
    msg_id = lowered.get(ID_HEADER)
    stamp = lowered.get(TIMESTAMP_HEADER)
    given = lowered.get(SIGNATURE_HEADER)
    if not msg_id or not stamp or not given:
        raise InvalidSignature(f"missing {ID_HEADER}, {TIMESTAMP_HEADER} or {SIGNATURE_HEADER}")
    try:
        timestamp = int(stamp)
    except ValueError:
        raise InvalidSignature(f"{TIMESTAMP_HEADER} is not epoch seconds") from None
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        raise InvalidSignature(f"{TIMESTAMP_HEADER} is more than {tolerance:g} s from now")
    expected = sign(secret, msg_id, timestamp, body).encode("ascii")
    matched = False
    for candidate in given.split():
        # Every candidate is compared (no early exit): the time taken says nothing about which matched.
        matched |= hmac.compare_digest(candidate.encode("ascii", "replace"), expected)
    if not matched:
        raise InvalidSignature("no v1 signature matches the secret")
