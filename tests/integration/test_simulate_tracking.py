"""The seed's tracking.enabled: one info line per request with the prompt and the answer's size."""

from __future__ import annotations

import logging

import aiohttp
import pytest

from tests.integration.test_simulate_app import chat_body, make_settings, real_server


@pytest.mark.parametrize("tracking", [True, False])
async def test_tracking_logs_each_request(tracking: bool, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="llmkit.simulate")
    async with real_server(make_settings(tracking=tracking)) as url, aiohttp.ClientSession() as session:
        async with session.post(f"{url}/v1/chat/completions", json=chat_body("tracked prompt")) as resp:
            assert resp.status == 200
            rid = resp.headers["X-Request-ID"]
    lines = [r.getMessage() for r in caplog.records if r.name == "llmkit.simulate" and rid in r.getMessage()]
    if tracking:
        assert len(lines) == 1 and "tracked prompt" in lines[0] and "tokens" in lines[0]
    else:
        assert lines == []
