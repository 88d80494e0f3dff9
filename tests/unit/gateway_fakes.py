"""A scripted upstream pool for gateway tests that need to hold calls open or count them exactly."""

from __future__ import annotations

import asyncio
from typing import Any

from llmkit.gateway.calls import ChatCall, OnPiece, Outcome
from llmkit.settings import Settings, load_settings


def gateway_settings(**gateway: Any) -> Settings:
    """Default settings with `gateway.*` overrides (flags win over env and profile); the platform store
    is in memory unless a test names one (never a file in the working directory)."""
    gateway.setdefault("platform_url", "sqlite:///:memory:")
    flags = {f"gateway.{key}": value for key, value in gateway.items()}
    return load_settings(flags={"server.access_log": False, **flags}, env={})


class HeldPool:
    """Answers each call with its last message's content word by word, after `release()` lets it go.

    Every call is recorded in `calls` in the order it started; `cancelled` counts calls cancelled while
    running (the gateway cancels a call when its last listener leaves).
    """

    def __init__(self, hold: bool = True) -> None:
        self.calls: list[ChatCall] = []
        self.cancelled = 0
        self.started = asyncio.Event()
        self._gate = asyncio.Event()
        if not hold:
            self._gate.set()
        self.first_piece_sent = asyncio.Event()

    def release(self) -> None:
        """Let every held call (and every later one) finish."""
        self._gate.set()

    async def chat(self, call: ChatCall, on_piece: OnPiece | None) -> Outcome:
        self.calls.append(call)
        self.started.set()
        text = str(call.messages[-1]["content"])
        words = [w + " " for w in text.split()] or [""]
        try:
            if on_piece is not None and words:
                on_piece(words[0])
                self.first_piece_sent.set()
            await self._gate.wait()
            if on_piece is not None:
                for word in words[1:]:
                    on_piece(word)
                    await asyncio.sleep(0)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        usage = {"prompt_tokens": 1, "completion_tokens": len(words), "total_tokens": len(words) + 1}
        return Outcome("".join(words), call.model, "stop", usage, "held")

    def watch_circuits(self, on_change: Any) -> None:
        """No breakers here: nothing ever opens."""

    async def warm(self, model: str) -> dict[str, Any]:
        return {"model": model, "upstream": "held", "load_ms": 0.0}

    async def check(self) -> list[dict[str, Any]]:
        return [{"url": "held", "kind": "test", "ok": True, "latency_ms": 0.0, "breaker": "closed"}]

    async def models(self) -> list[str]:
        return ["held-model"]

    def stats(self) -> list[dict[str, Any]]:
        return [{"url": "held", "breaker": "closed", "calls": len(self.calls)}]

    async def close(self) -> None:
        self._gate.set()
