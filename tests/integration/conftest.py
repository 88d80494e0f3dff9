"""Fixtures shared by the simulator's integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.integration.test_simulate_app import make_settings, real_server


@pytest.fixture
async def base_url() -> AsyncIterator[str]:
    """A real `llmkit simulate` app on port 0 with the in-test FixedSource; its base URL."""
    async with real_server(make_settings()) as url:
        yield url
