"""The receiver snippet of docs/webhooks.md, run as a reader would paste it: it verifies real deliveries of
the gateway (a generated whsec_ secret, a text secret, both secrets during a rotation) and refuses a
tampered body, a stale timestamp and a wrong secret."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from llmkit.platform.webhooks.signing import new_secret
from llmkit.platform.webhooks.signing import verify as llmkit_verify
from tests.integration.test_gateway_platform import AS_ADMIN, MakeClient, key, start
from tests.integration.test_gateway_webhooks import create
from tests.integration.webhook_receiver import Received, receiver

DOC = Path(__file__).resolve().parents[2] / "docs" / "webhooks.md"
Verify = Callable[..., dict[str, Any]]


def snippet() -> dict[str, Any]:
    """The one ```python block of docs/webhooks.md, executed on its own (stdlib only): its names."""
    blocks = re.findall(r"^```python\n(.*?)^```$", DOC.read_text(encoding="utf-8"), re.S | re.M)
    assert len(blocks) == 1, "docs/webhooks.md has exactly one python block: the receiver's check"
    names: dict[str, Any] = {"__name__": "webhooks_doc_snippet"}
    exec(compile(blocks[0], str(DOC), "exec"), names)
    imported = set(re.findall(r"^(?:import|from) (\w+)", blocks[0], re.M))
    assert imported <= {"base64", "hashlib", "hmac", "json", "time"}, imported
    return names


@pytest.fixture
def doc() -> dict[str, Any]:
    return snippet()


def stamp(got: Received) -> int:
    return int(got.headers["webhook-timestamp"])


def refused(doc: dict[str, Any], *args: Any, **kw: Any) -> str:
    """The InvalidWebhook message verify_webhook raises for these arguments."""
    with pytest.raises(doc["InvalidWebhook"]) as caught:
        doc["verify_webhook"](*args, **kw)
    return str(caught.value)


async def test_the_snippet_verifies_a_real_delivery_and_refuses_tampering(
    aiohttp_client: MakeClient, tmp_path: Path, doc: dict[str, Any]
) -> None:
    verify: Verify = doc["verify_webhook"]
    client = await start(aiohttp_client, tmp_path)
    async with receiver() as got:
        made = await create(client, url=got.url, events=["key.created"])
        secret = made["secret"]
        assert secret.startswith("whsec_")
        await key(client)
        (one,) = await got.wait_for(1)
    event = verify(secret, one.headers, one.body)
    assert event["type"] == "key.created" and event["id"].startswith("evt_")
    assert event["data"]["name"] == "k" and "key" not in event["data"]
    # Header names in any case, as frameworks hand them over.
    assert verify(secret, {k.upper(): v for k, v in one.headers.items()}, one.body) == event

    tampered = one.body.replace(b'"name":"k"', b'"name":"x"')
    assert tampered != one.body
    assert "no signature matches" in refused(doc, secret, one.headers, tampered)
    assert "too far from now" in refused(doc, secret, one.headers, one.body, now=stamp(one) + 301)
    assert "too far from now" in refused(doc, secret, one.headers, one.body, now=stamp(one) - 301)
    assert verify(secret, one.headers, one.body, now=stamp(one) + 299) == event
    # A replay with a fresh timestamp but the old signature: the signature covers the timestamp.
    replayed = {**one.headers, "webhook-timestamp": str(int(time.time()))}
    if replayed["webhook-timestamp"] != one.headers["webhook-timestamp"]:
        assert "no signature matches" in refused(doc, secret, replayed, one.body)
    assert "no signature matches" in refused(doc, new_secret(), one.headers, one.body)
    without = {k: v for k, v in one.headers.items() if k.lower() != "webhook-signature"}
    assert "missing" in refused(doc, secret, without, one.body)


async def test_the_snippet_takes_both_signatures_during_a_rotation_and_text_secrets(
    aiohttp_client: MakeClient, tmp_path: Path, doc: dict[str, Any]
) -> None:
    verify: Verify = doc["verify_webhook"]
    client = await start(aiohttp_client, tmp_path)
    async with receiver() as got:
        made = await create(client, url=got.url, events=["*"], secret="webhook_secret")
        await client.post(f"/api/admin/webhooks/{made['id']}/test", headers=AS_ADMIN)
        # Signed when sent: wait for it before rotating.
        await got.wait_for(1)
        rotated = await client.post(f"/api/admin/webhooks/{made['id']}/rotate", headers=AS_ADMIN)
        assert rotated.status == 200, await rotated.text()
        new = (await rotated.json())["secret"]
        await client.post(f"/api/admin/webhooks/{made['id']}/test", headers=AS_ADMIN)
        before, during = await got.wait_for(2)
    assert verify("webhook_secret", before.headers, before.body)["type"] == "webhook.test"
    assert len(before.headers["webhook-signature"].split()) == 1
    assert len(during.headers["webhook-signature"].split()) == 2
    assert all(s.startswith("v1,") for s in during.headers["webhook-signature"].split())
    for secret in (new, "webhook_secret"):
        assert verify(secret, during.headers, during.body)["type"] == "webhook.test"
    assert "no signature matches" in refused(doc, "another_secret", during.headers, during.body)
    # The snippet and llmkit's own verify() agree.
    llmkit_verify(new, during.headers, during.body)
