"""The gateway's application keys, shared by app.py and the route modules it wires."""

from __future__ import annotations

from aiohttp import web

from llmkit.gateway.service import Gateway

GATEWAY_KEY = web.AppKey("llmkit_gateway", Gateway)
