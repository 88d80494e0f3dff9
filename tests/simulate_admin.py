"""The admin key the tests give `llmkit simulate` (simulate.admin_key) and the header that sends it."""

from __future__ import annotations

SIMULATE_ADMIN_KEY = "test-simulate-admin-key-0123456789"
# For a `llmkit simulate` process: the key comes from the environment, as it would in production.
SIMULATE_ADMIN_ENV = {"LLMKIT_SIMULATE_ADMIN_KEY": SIMULATE_ADMIN_KEY}
ADMIN_HEADERS = {"X-API-Key": SIMULATE_ADMIN_KEY}
