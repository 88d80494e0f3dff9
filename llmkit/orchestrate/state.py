"""The orchestrator's application keys, shared by app.py and the route modules it wires."""

from __future__ import annotations

from aiohttp import web

from llmkit.orchestrate.service import Orchestrator
from llmkit.settings import OrchestrateSettings

ORCHESTRATOR_KEY = web.AppKey("llmkit_orchestrator", Orchestrator)
ORCHESTRATE_KEY = web.AppKey("llmkit_orchestrate_settings", OrchestrateSettings)
