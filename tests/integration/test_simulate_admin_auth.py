"""The simulator's /admin/* behind simulate.admin_key: 403 while unset, 401 without it, the key unseen."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import openai

from llmkit.simulate.app import create_app
from llmkit.simulate.faults import INJECTOR_KEY
from tests.integration.test_simulate_app import (
    Client,
    FixedSource,
    MakeClient,
    chat_body,
    make_settings,
    real_server,
)
from tests.serve_process import LLMKIT, ROOT, ServerProcess
from tests.simulate_admin import SIMULATE_ADMIN_ENV, SIMULATE_ADMIN_KEY

KEY = SIMULATE_ADMIN_KEY
SCHEDULE = {"schedule": [{"fault": "429", "count": 3}]}
# Each admin call: its method and JSON body (None: no body).
CALLS: list[tuple[str, dict[str, Any] | None]] = [("GET", None), ("POST", SCHEDULE), ("DELETE", None)]
# Wrong keys: a guess, prefixes of the right one, the right one plus a character, a different case.
WRONG_KEYS = ["guess", KEY[:-1], KEY[:8], KEY + "x", KEY.upper()]
GOOD_HEADERS = [{"Authorization": f"Bearer {KEY}"}, {"X-API-Key": KEY}, {"api-key": KEY}]
LISTENING_ANY_RE = re.compile(r"^llmkit simulate listening on http://0\.0\.0\.0:(\d+)$")


async def simulator(aiohttp_client: MakeClient, **simulate: Any) -> Client:
    return await aiohttp_client(create_app(make_settings(**simulate), FixedSource()))


def env_without_key() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "LLMKIT_SIMULATE_ADMIN_KEY"}


async def test_without_an_admin_key_admin_faults_is_403_naming_the_setting_and_changes_nothing(
    aiohttp_client: MakeClient,
) -> None:
    client = await simulator(aiohttp_client)
    injector = client.server.app[INJECTOR_KEY]
    # Something for a DELETE to clear and a POST to add to: neither may touch it.
    injector.configure({"schedule": [{"fault": "ok", "count": 5}], "rates": {"500": 0.0}})
    before = injector.snapshot()
    for method, body in CALLS:
        got = await client.request(method, "/admin/faults", json=body)
        assert got.status == 403, method
        error = (await got.json())["error"]
        assert error["code"] == "admin_disabled"
        assert "simulate.admin_key" in error["message"] and "LLMKIT_SIMULATE_ADMIN_KEY" in error["message"]
        # A key while none is configured opens nothing either.
        guessed = await client.request(method, "/admin/faults", json=body, headers={"X-API-Key": "guess"})
        assert guessed.status == 401, method
    assert injector.snapshot() == before
    # Model routes are open: a request without any key is served.
    assert (await client.post("/v1/chat/completions", json=chat_body())).status == 200


async def test_with_a_key_admin_faults_needs_exactly_that_key(aiohttp_client: MakeClient) -> None:
    client = await simulator(aiohttp_client, admin_key=KEY)
    injector = client.server.app[INJECTOR_KEY]
    injector.configure({"schedule": [{"fault": "ok", "count": 5}]})
    before = injector.snapshot()
    bodies: list[str] = []
    for method, body in CALLS:
        missing = await client.request(method, "/admin/faults", json=body)
        assert missing.status == 401, method
        assert (await missing.json())["error"]["code"] == "missing_api_key"
        bodies.append(await missing.text())
        for wrong in WRONG_KEYS:
            for headers in ({"X-API-Key": wrong}, {"Authorization": f"Bearer {wrong}"}, {"api-key": wrong}):
                got = await client.request(method, "/admin/faults", json=body, headers=headers)
                assert got.status == 401, (method, headers)
                bodies.append(await got.text())
    assert injector.snapshot() == before
    for method, body in CALLS:
        for headers in GOOD_HEADERS:
            ok = await client.request(method, "/admin/faults", json=body, headers=headers)
            assert ok.status == 200, (method, headers, await ok.text())
            bodies.append(await ok.text())
    posted = await client.post("/admin/faults", json=SCHEDULE, headers={"X-API-Key": KEY})
    assert (await posted.json())["schedule"] == [{"fault": "429", "count": 3}]
    assert (await client.post("/v1/chat/completions", json=chat_body())).status == 429
    for path in ("/stats", "/metrics", "/openapi.json", "/health"):
        bodies.append(await (await client.get(path, headers={"X-API-Key": KEY})).text())
    assert not [b for b in bodies if KEY in b]


async def test_openapi_lists_401_and_403_on_the_admin_routes(aiohttp_client: MakeClient) -> None:
    client = await simulator(aiohttp_client, admin_key=KEY)
    paths = (await (await client.get("/openapi.json")).json())["paths"]
    for method in ("get", "post", "delete"):
        responses = paths["/admin/faults"][method]["responses"]
        assert {"200", "401", "403"} <= set(responses), method


async def test_openai_client_with_any_api_key_still_chats_while_admin_is_locked() -> None:
    async with real_server(make_settings(admin_key=KEY)) as url:
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="sk-anything-at-all", max_retries=0)
        try:
            answer = await client.chat.completions.create(
                model="gpt-test", messages=[{"role": "user", "content": "Halo"}]
            )
            assert answer.choices[0].finish_reason == "stop"
            stream = await client.chat.completions.create(
                model="gpt-test", messages=[{"role": "user", "content": "Halo"}], stream=True
            )
            chunks = [chunk async for chunk in stream]
            assert chunks[-1].choices[0].finish_reason == "stop"
            assert (await client.models.list()).data
        finally:
            await client.close()
        # The same arbitrary key is no admin key.
        headers = {"Authorization": "Bearer sk-anything-at-all"}
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{url}/admin/faults", headers=headers) as got,
        ):
            assert got.status == 401


def http(url: str, method: str = "GET", headers: dict[str, str] | None = None) -> tuple[int, str]:
    """One request with the standard library; its status and body."""
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_the_key_never_reaches_stats_config_show_or_the_server_log(tmp_path: Path) -> None:
    # Everything that could show it switched on: the access log, debug logging, request tracking.
    env = {
        **SIMULATE_ADMIN_ENV,
        "LLMKIT_SERVER_ACCESS_LOG": "true",
        "LLMKIT_SERVER_LOG_LEVEL": "debug",
        "LLMKIT_SIMULATE_TRACKING": "true",
    }
    seen: list[str] = []
    with ServerProcess(tmp_path, "--port", "0", command="simulate", env=env) as server:
        url = server.wait_listening()
        assert http(f"{url}/admin/faults", headers={"X-API-Key": KEY})[0] == 200
        for wrong in WRONG_KEYS:
            status, body = http(f"{url}/admin/faults", "DELETE", {"Authorization": f"Bearer {wrong}"})
            assert status == 401
            seen.append(body)
        # The admin key as a client's API key on a model route: served, and not logged either.
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
        try:
            answer = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Halo"}])
            seen.append(answer.model_dump_json())
        finally:
            client.close()
        for path in ("/stats", "/metrics", "/health?deep=1", "/openapi.json"):
            status, body = http(url + path, headers={"X-API-Key": KEY})
            assert status == 200, path
            seen.append(body)
        server.signal(signal.SIGTERM)
        assert server.wait() == 0
        seen += [server.stderr, *server.rest_of_stdout()]
    shown = subprocess.run(
        [LLMKIT, "config", "show"], env={**os.environ, **env}, capture_output=True, text=True, timeout=60
    )
    shown_json = subprocess.run(
        [LLMKIT, "config", "show", "--json"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0 and shown_json.returncode == 0
    assert "simulate.admin_key" in shown.stdout and "********" in shown.stdout
    seen += [shown.stdout, shown.stderr, shown_json.stdout, shown_json.stderr]
    # The log was on: it has the requests, not the key.
    assert "GET /admin/faults 200" in server.stderr and "DELETE /admin/faults 401" in server.stderr
    assert not [text for text in seen if KEY in text]


def test_simulate_beyond_loopback_without_the_key_exits_2_naming_the_setting() -> None:
    for args in (["--host", "0.0.0.0"], ["--profile", "ha"]):
        done = subprocess.run(
            [LLMKIT, "simulate", *args, "--port", "0"],
            cwd=ROOT,
            env=env_without_key(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert "simulate.admin_key" in done.stderr and "LLMKIT_SIMULATE_ADMIN_KEY" in done.stderr, args
        assert "listening" not in done.stdout


def test_simulate_beyond_loopback_starts_with_the_key_from_the_environment(tmp_path: Path) -> None:
    env = {**SIMULATE_ADMIN_ENV, "LLMKIT_SERVER_ACCESS_LOG": "false"}
    with ServerProcess(tmp_path, "--host", "0.0.0.0", "--port", "0", command="simulate", env=env) as server:
        line = server.read_line(60) or ""
        match = LISTENING_ANY_RE.match(line)
        assert match is not None, (line, server.stderr)
        url = f"http://127.0.0.1:{match.group(1)}"
        assert http(f"{url}/admin/faults")[0] == 401
        assert http(f"{url}/admin/faults", headers={"X-API-Key": KEY})[0] == 200
