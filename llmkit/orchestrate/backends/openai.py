"""OpenAIBackend: jobs as chat completions on an OpenAI-compatible server, whole or streamed over SSE."""

from __future__ import annotations

from typing import Any

import aiohttp

from llmkit.core.upstream import (
    SessionFactory,
    UpstreamResponse,
    UpstreamSession,
    in_stream_error,
    iter_lines,
    loads,
)
from llmkit.orchestrate.backends.base import JobSpec, OnDelta, PermanentError, RetryableError, no_model


class OpenAIBackend:
    """POST {base_url}/chat/completions with the prompt as one user message."""

    name = "openai"

    def __init__(
        self,
        base_url: str,
        api_key: str = "",
        default_model: str = "",
        *,
        timeout: float = 300.0,
        session: aiohttp.ClientSession | None = None,
        session_factory: SessionFactory | None = None,
    ) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.default_model = default_model
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = UpstreamSession(
            self.name, timeout=timeout, headers=headers, session=session, session_factory=session_factory
        )

    def body(self, job: JobSpec) -> dict[str, Any]:
        """The request body: the job's parameters, then model, messages and stream (which override them)."""
        model = job.model or self.default_model
        if not model:
            raise no_model(self.name)
        messages = [{"role": "user", "content": job.prompt}]
        return {**job.parameters, "model": model, "messages": messages, "stream": job.stream}

    async def run(self, job: JobSpec, on_delta: OnDelta | None = None) -> str:
        """The assistant's text; a streamed job passes each content delta to `on_delta` as it arrives."""
        async with self.http.post(self.url, self.body(job)) as response:
            if job.stream:
                return await self._read_stream(response, on_delta)
            return self._content(loads(self.name, await response.read()))

    def _content(self, data: Any) -> str:
        try:
            content = data["choices"][0]["message"].get("content")
        except (KeyError, IndexError, TypeError, AttributeError):
            snippet = str(data)[:200]
            raise PermanentError(f"{self.name}: the answer has no choices[0].message: {snippet}") from None
        # null content (a tool call, a refusal) is an empty answer, not a broken one.
        return content if isinstance(content, str) else ""

    async def _read_stream(self, response: UpstreamResponse, on_delta: OnDelta | None) -> str:
        parts: list[str] = []
        async for line in iter_lines(response):
            # Only `data:` lines carry events; blank lines, `event:` names and `:` comments do not.
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                return "".join(parts)
            text = self._delta(loads(self.name, payload))
            if text:
                parts.append(text)
                if on_delta is not None:
                    await on_delta(text)
        # No [DONE]: the server or the line gave out halfway.
        raise RetryableError(f"{self.name}: the stream from {self.url} ended before [DONE]")

    def _delta(self, event: Any) -> str:
        if not isinstance(event, dict):
            raise PermanentError(f"{self.name}: a stream event is not an object: {str(event)[:200]}")
        if "error" in event:
            raise in_stream_error(self.name, event["error"])
        for choice in event.get("choices") or ():
            # n > 1 is not a job's business: the first choice is the answer.
            if isinstance(choice, dict) and choice.get("index", 0) == 0:
                content = (choice.get("delta") or {}).get("content")
                return content if isinstance(content, str) else ""
        return ""

    async def close(self) -> None:
        """Close the HTTP session (if this backend made it)."""
        await self.http.close()
