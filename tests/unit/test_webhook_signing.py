"""Standard Webhooks signatures: the spec's published vector, rotation's two signatures, verify's refusals."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmkit.platform.webhooks.signing import (
    InvalidSignature,
    new_secret,
    secret_key,
    sign,
    signed_headers,
    verify,
)

# The Standard Webhooks reference libraries' test vector.
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_the_spec_vector_signs_and_verifies() -> None:
    assert sign(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE
    headers = {
        "webhook-id": SPEC_ID,
        "webhook-timestamp": str(SPEC_TIMESTAMP),
        "webhook-signature": SPEC_SIGNATURE,
    }
    verify(SPEC_SECRET, headers, SPEC_BODY, now=SPEC_TIMESTAMP + 10)
    # Header names in any case; another signature beside it (a rotation) is fine.
    mixed = {"Webhook-Id": SPEC_ID, "WEBHOOK-TIMESTAMP": str(SPEC_TIMESTAMP)}
    verify(
        SPEC_SECRET,
        {**mixed, "Webhook-Signature": f"v1,bm9wZQ== {SPEC_SIGNATURE}"},
        SPEC_BODY,
        now=SPEC_TIMESTAMP,
    )


def test_generated_secrets_are_whsec_of_32_random_bytes() -> None:
    one, two = new_secret(), new_secret()
    assert one.startswith("whsec_") and one != two
    assert len(base64.b64decode(one[6:])) == 32 == len(secret_key(one))


def test_rotation_signs_with_both_secrets_and_each_verifies() -> None:
    old, new = new_secret(), new_secret()
    headers = signed_headers([new, old], "msg_1", 1000, b"{}")
    assert headers["webhook-id"] == "msg_1" and headers["webhook-timestamp"] == "1000"
    assert len(headers["webhook-signature"].split(" ")) == 2
    verify(new, headers, b"{}", now=1000)
    verify(old, headers, b"{}", now=1000)
    with pytest.raises(InvalidSignature, match="no v1 signature"):
        verify(new_secret(), headers, b"{}", now=1000)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"body": b'{"test": 2432232315}'}, "no v1 signature"),
        ({"now": SPEC_TIMESTAMP + 301}, "from now"),
        ({"now": SPEC_TIMESTAMP - 301}, "from now"),
        ({"webhook-id": "msg_other"}, "no v1 signature"),
        ({"webhook-timestamp": "soon"}, "epoch seconds"),
        ({"webhook-signature": ""}, "missing"),
        ({"webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE"}, "no v1 signature"),
        ({"webhook-signature": "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="}, "no v1 signature"),
    ],
)
def test_verify_refuses_what_was_not_signed(change: dict[str, object], reason: str) -> None:
    headers = {
        "webhook-id": SPEC_ID,
        "webhook-timestamp": str(SPEC_TIMESTAMP),
        "webhook-signature": SPEC_SIGNATURE,
    }
    body = change.pop("body", SPEC_BODY)
    now = change.pop("now", SPEC_TIMESTAMP)
    headers.update({k: str(v) for k, v in change.items()})
    with pytest.raises(InvalidSignature, match=reason):
        verify(SPEC_SECRET, headers, body, now=now)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        ("whsec_not base64!", "base64"),
        ("whsec_" + base64.b64encode(b"x" * 8).decode(), "24 to 64 bytes"),
        ("short", "8 to 256 characters"),
        ("x" * 257, "8 to 256 characters"),
    ],
)
def test_bad_secrets_say_what_a_good_one_is(secret: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        secret_key(secret)


def test_a_text_secret_is_its_utf8_bytes() -> None:
    assert secret_key("webhook_secret") == b"webhook_secret"
    headers = signed_headers(["webhook_secret"], "msg_2", 5, b"[]")
    verify("webhook_secret", headers, b"[]", now=5)


@given(st.binary(max_size=200), st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1))
def test_any_body_and_id_round_trip(body: bytes, msg_id: str) -> None:
    headers = signed_headers([SPEC_SECRET], msg_id, SPEC_TIMESTAMP, body)
    verify(SPEC_SECRET, headers, body, now=SPEC_TIMESTAMP)
