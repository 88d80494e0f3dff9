"""llmkit.core.auth: the one guard every route goes through (admin key, keys, scopes, cross-site bodies)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from llmkit.core.auth import (
    ADMIN,
    CHAT,
    PUBLIC,
    AuthError,
    Guard,
    Identity,
    credential_of,
    is_loopback,
    refuse_open_bind,
)
from llmkit.core.http import add_route, create_base_app, identity_of, json_response, read_json
from llmkit.errors import ConfigError
from llmkit.settings import ServerSettings

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]
ADMIN_KEY = "s3cret-admin-key-of-some-length"


class Keys:
    """A verifier that knows one chat key of tenant t1 and one revoked key."""

    def recognizes(self, credential: str) -> bool:
        return credential.startswith("llk_")

    async def identify(self, credential: str) -> Identity:
        if credential == "llk_good_x":
            return Identity("good", "t1", frozenset({CHAT}))
        if credential == "llk_revoked_x":
            raise AuthError(403, "key_revoked", "this key was revoked")
        raise AuthError(401, "invalid_api_key", "unknown key")

    def known(self, credential: str) -> Identity | None:
        return None


async def whoami(request: web.Request) -> web.Response:
    """Who the guard says is calling."""
    ident = identity_of(request)
    return json_response({"key": ident.key_id, "tenant": ident.tenant_id, "admin": ident.platform_admin})


async def change(request: web.Request) -> web.Response:
    """A mutating route reading JSON leniently, like the seed's cache action."""
    return json_response({"got": await read_json(request, lenient=True)})


async def app_client(aiohttp_client: MakeClient, guard: Guard) -> Client:
    app = create_base_app("t", ServerSettings(), guard=guard)
    add_route(app, "GET", "/chat", whoami, scope=CHAT)
    add_route(app, "POST", "/change", change)
    add_route(app, "POST", "/form", change, forms=True)
    add_route(app, "GET", "/admin", whoami, scope=ADMIN)
    add_route(app, "GET", "/open", whoami, scope=PUBLIC)
    return await aiohttp_client(app)


async def test_admin_routes_are_off_until_an_admin_credential_is_set(aiohttp_client: MakeClient) -> None:
    client = await app_client(aiohttp_client, Guard(admin_setting="gateway.admin_key"))
    got = await client.get("/admin")
    assert got.status == 403 and "gateway.admin_key" in (await got.json())["error"]["message"]
    # A key in no format this server issues is not an admin credential either.
    assert (await client.get("/admin", headers={"X-API-Key": "guess"})).status == 401


async def test_the_admin_key_opens_admin_routes_and_nothing_else_does(aiohttp_client: MakeClient) -> None:
    client = await app_client(aiohttp_client, Guard(admin_key=ADMIN_KEY, admin_setting="x", verifier=Keys()))
    missing = await client.get("/admin")
    assert missing.status == 401 and missing.headers["WWW-Authenticate"].startswith("Bearer")
    for header in ("Authorization", "X-API-Key", "api-key"):
        value = f"Bearer {ADMIN_KEY}" if header == "Authorization" else ADMIN_KEY
        ok = await client.get("/admin", headers={header: value})
        assert ok.status == 200 and (await ok.json())["admin"] is True
    assert (await client.get("/admin", headers={"X-API-Key": ADMIN_KEY[:-1]})).status == 401
    assert (await client.get("/admin", headers={"X-API-Key": ADMIN_KEY + "x"})).status == 401
    chat_key = await client.get("/admin", headers={"X-API-Key": "llk_good_x"})
    assert chat_key.status == 403 and "admin scope" in (await chat_key.json())["error"]["message"]
    body = (await client.get("/admin", headers={"X-API-Key": ADMIN_KEY[:-1]})).text
    assert ADMIN_KEY not in await body()


async def test_required_keys_401_403_and_the_identity_reaches_the_handler(aiohttp_client: MakeClient) -> None:
    guard = Guard(admin_setting="x", verifier=Keys(), require_key=True)
    client = await app_client(aiohttp_client, guard)
    assert (await client.get("/chat")).status == 401
    assert (await client.get("/chat", headers={"Authorization": "Bearer sk-whatever"})).status == 401
    assert (await client.get("/chat", headers={"X-API-Key": "llk_nope_x"})).status == 401
    assert (await client.get("/chat", headers={"X-API-Key": "llk_revoked_x"})).status == 403
    ok = await client.get("/chat", headers={"Authorization": "Bearer llk_good_x"})
    assert await ok.json() == {"key": "good", "tenant": "t1", "admin": False}
    assert (await client.get("/open")).status == 200
    assert (await client.get("/health")).status == 200
    assert (await client.get("/stats")).status == 401


async def test_without_required_keys_foreign_credentials_are_anonymous(aiohttp_client: MakeClient) -> None:
    client = await app_client(aiohttp_client, Guard(admin_setting="x", verifier=Keys()))
    anon = await client.get("/chat", headers={"Authorization": "Bearer sk-from-the-openai-client"})
    assert await anon.json() == {"key": None, "tenant": "default", "admin": False}
    # A key in our format is meant as one: a wrong one is refused, never served anonymously.
    assert (await client.get("/chat", headers={"X-API-Key": "llk_nope_x"})).status == 401
    assert (await client.get("/chat")).status == 200


@pytest.mark.parametrize(
    ("headers", "with_a_key"),
    [
        ({"Content-Type": "text/plain"}, 200),
        ({"Content-Type": "application/x-www-form-urlencoded"}, 200),
        # The lenient route never reads multipart as JSON, credential or not.
        ({"Content-Type": "multipart/form-data; boundary=x"}, 415),
        ({}, 200),
    ],
)
async def test_bodies_a_web_page_could_send_cross_site_are_415(
    aiohttp_client: MakeClient, headers: dict[str, str], with_a_key: int
) -> None:
    client = await app_client(aiohttp_client, Guard(admin_setting="x"))
    refused = await client.post(
        "/change", data=b'{"a": 1}', headers=headers, skip_auto_headers={"Content-Type"}
    )
    assert refused.status == 415, await refused.text()
    assert "application/json" in (await refused.json())["error"]["message"]
    with_key = await client.post(
        "/change", data=b'{"a": 1}', headers={**headers, "X-API-Key": "k"}, skip_auto_headers={"Content-Type"}
    )
    assert with_key.status == with_a_key
    assert (await client.post("/change", json={"a": 1})).status == 200


async def test_cross_origin_browsers_are_refused_even_on_form_routes(aiohttp_client: MakeClient) -> None:
    client = await app_client(aiohttp_client, Guard(admin_setting="x"))
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    assert (await client.post("/form", data=b'{"a": 1}', headers=form)).status == 200
    evil = {**form, "Origin": "https://evil.example"}
    assert (await client.post("/form", data=b'{"a": 1}', headers=evil)).status == 403
    fetch = {"Content-Type": "application/json", "Sec-Fetch-Site": "cross-site"}
    assert (await client.post("/change", data=b'{"a": 1}', headers=fetch)).status == 403
    same = {"Content-Type": "application/json", "Origin": f"http://{client.host}:{client.port}"}
    assert (await client.post("/change", data=b'{"a": 1}', headers=same)).status == 200
    assert (await client.post("/change", json={"a": 1}, headers={"Origin": "null"})).status == 403


def test_credentials_are_read_from_the_three_headers() -> None:
    assert credential_of({"Authorization": "Bearer abc"}) == "abc"
    assert credential_of({"Authorization": "bearer  abc "}) == "abc"
    assert credential_of({"Authorization": "Basic abc"}) is None
    assert credential_of({"X-API-Key": "k"}) == "k"
    assert credential_of({"api-key": "k"}) == "k"
    assert credential_of({}) is None


def test_binding_beyond_loopback_without_an_admin_credential_is_refused() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2") and not is_loopback("example.com")
    refuse_open_bind("127.0.0.1", False, "gateway.admin_key", "LLMKIT_GATEWAY_ADMIN_KEY")
    refuse_open_bind("0.0.0.0", True, "gateway.admin_key", "LLMKIT_GATEWAY_ADMIN_KEY")
    with pytest.raises(ConfigError, match=r"set gateway.admin_key \(env LLMKIT_GATEWAY_ADMIN_KEY\)"):
        refuse_open_bind("0.0.0.0", False, "gateway.admin_key", "LLMKIT_GATEWAY_ADMIN_KEY")


async def test_an_admin_key_in_the_api_key_format_is_still_the_admin_key(aiohttp_client: MakeClient) -> None:
    client = await app_client(
        aiohttp_client, Guard(admin_key="llk_admin_x", admin_setting="x", verifier=Keys())
    )
    ok = await client.get("/admin", headers={"X-API-Key": "llk_admin_x"})
    assert ok.status == 200 and (await ok.json())["admin"] is True
    # A revoked key is refused as revoked, never taken for the admin key.
    assert (await client.get("/admin", headers={"X-API-Key": "llk_revoked_x"})).status == 403
