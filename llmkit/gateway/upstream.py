"""The gateway's upstreams: one model server each, speaking Ollama's API or an OpenAI-compatible one.

Each turns a ChatCall into one HTTP request and its answer into an Outcome; every failure is a
RetryableError or PermanentError (llmkit.core.upstream) whose message names the upstream URL.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from llmkit.core.http1 import Http1Client
from llmkit.core.upstream import (
    SharedSession,
    Timeouts,
    UpstreamSession,
    in_stream_error,
    iter_lines,
    loads,
    ollama_fields,
)
from llmkit.errors import PermanentError, RetryableError
from llmkit.gateway.calls import ChatCall, OnPiece, Outcome

_SNIPPET = 200


class Upstream(Protocol):
    """One model server the gateway calls."""

    url: str
    kind: str

    async def chat(self, call: ChatCall, on_piece: OnPiece | None) -> Outcome:
        """The answer; when `call.stream`, each piece goes to `on_piece` as soon as it is read."""
        ...

    async def warm(self, model: str) -> None:
        """Have the server load `model`."""
        ...

    async def check(self) -> None:
        """Raise the mapped error unless the server answers a cheap request."""
        ...

    async def models(self) -> list[str]:
        """The ids of the models the server offers."""
        ...

    async def close(self) -> None:
        """Release connections; the upstream is not used afterwards."""
        ...


def usage(prompt: Any, completion: Any) -> dict[str, int] | None:
    """OpenAI's usage object from two token counts, or None when the upstream gave neither."""
    if not isinstance(prompt, int) and not isinstance(completion, int):
        return None
    prompt = prompt if isinstance(prompt, int) else 0
    completion = completion if isinstance(completion, int) else 0
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


class _Answer:
    """What a streamed answer has said so far."""

    __slots__ = ("finish", "model", "on_piece", "parts", "usage")

    def __init__(self, model: str, on_piece: OnPiece | None) -> None:
        self.parts: list[str] = []
        self.model = model
        self.finish = "stop"
        self.usage: dict[str, int] | None = None
        self.on_piece = on_piece

    def add(self, text: Any) -> None:
        """Keep a piece of text and pass it on at once."""
        if text and isinstance(text, str):
            self.parts.append(text)
            if self.on_piece is not None:
                self.on_piece(text)

    def outcome(self, upstream: str) -> Outcome:
        """The finished answer."""
        return Outcome("".join(self.parts), self.model, self.finish, self.usage, upstream)


class HttpUpstream:
    """What both kinds share: the URL, one UpstreamSession, GETs and POSTs of whole JSON objects."""

    kind = ""
    # The chat path under the URL.
    CHAT = ""

    def __init__(
        self,
        url: str,
        *,
        api_key: str = "",
        keep_alive: str = "",
        timeouts: Timeouts | None = None,
        session: SharedSession | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.keep_alive = keep_alive
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # A pool hands in its SharedSession; an upstream made alone makes (and closes) its own session.
        self.http = UpstreamSession(
            self.kind, timeout=timeouts or Timeouts(), headers=headers, shared=session
        )
        self.idle = self.http.timeouts.idle
        # Made once: the chat path is the hot one.
        self.chat_url = self.url + self.CHAT
        self.chat_where = self.where("POST", self.CHAT)

    def where(self, method: str, path: str) -> str:
        """`kind: METHOD url`: how messages name a request."""
        return f"{self.kind}: {method} {self.url}{path}"

    def object(self, where: str, raw: bytes) -> dict[str, Any]:
        """The JSON object of an answer (or a stream line); its `error` raised as the mapped error."""
        data = loads(where, raw)
        if not isinstance(data, dict):
            raise PermanentError(f"{where}: the answer is not a JSON object: {str(data)[:_SNIPPET]}")
        if "error" in data:
            raise in_stream_error(where, data["error"])
        return data

    async def get(self, path: str) -> dict[str, Any]:
        """GET {url}{path}: its JSON object."""
        async with self.http.request("GET", self.url + path, whole=True) as response:
            return self.object(self.where("GET", path), await response.read())

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST {url}{path}, not streamed: its JSON object."""
        async with self.http.post(self.url + path, body, whole=True) as response:
            return self.object(self.where("POST", path), await response.read())

    async def close(self) -> None:
        """Close the HTTP session (if this upstream made it)."""
        await self.http.close()


class OllamaUpstream(HttpUpstream):
    """An Ollama server: POST /api/chat (NDJSON stream or one object), GET /api/tags."""

    kind = "ollama"
    CHAT = "/api/chat"

    async def chat(self, call: ChatCall, on_piece: OnPiece | None) -> Outcome:
        """The answer to `call`; a streamed call passes each message.content piece to `on_piece`."""
        body: dict[str, Any] = {"model": call.model, "messages": call.messages, "stream": call.stream}
        if self.keep_alive:
            body["keep_alive"] = self.keep_alive
        # After ours: a call's own keep_alive or format wins; the rest lands in `options`.
        body.update(ollama_fields(call.params))
        where = self.chat_where
        answer = _Answer(call.model, on_piece if call.stream else None)
        async with self.http.post(self.chat_url, body, whole=not call.stream) as response:
            if not call.stream:
                data = self.object(where, await response.read())
                if not isinstance(data.get("message"), dict):
                    raise PermanentError(f"{where}: the answer has no message: {str(data)[:_SNIPPET]}")
                self._take(answer, data)
                return answer.outcome(self.url)
            async for line in iter_lines(response, self.idle):
                if line.strip() and self._take(answer, self.object(where, line)):
                    return answer.outcome(self.url)
        # No `"done": true` object: the server or the line gave out halfway.
        raise RetryableError(f"{where}: the stream ended before done")

    @staticmethod
    def _take(answer: _Answer, data: dict[str, Any]) -> bool:
        """Add one object's content to `answer`; True when it is the last one (done)."""
        message = data.get("message")
        if isinstance(message, dict):
            answer.add(message.get("content"))
        if data.get("done") is not True:
            return False
        answer.model = data.get("model") or answer.model
        answer.finish = data.get("done_reason") or "stop"
        answer.usage = usage(data.get("prompt_eval_count"), data.get("eval_count"))
        return True

    async def warm(self, model: str) -> None:
        """Load `model`: /api/chat with no messages, which Ollama answers once the model is in memory."""
        body: dict[str, Any] = {"model": model, "messages": [], "stream": False}
        if self.keep_alive:
            body["keep_alive"] = self.keep_alive
        await self.post(self.CHAT, body)

    async def check(self) -> None:
        """GET /api/tags: answered without touching a model."""
        await self.get("/api/tags")

    async def models(self) -> list[str]:
        """The `name` of each model in /api/tags."""
        data = await self.get("/api/tags")
        return [m["name"] for m in data.get("models") or () if isinstance(m, dict) and m.get("name")]


class OpenAIUpstream(HttpUpstream):
    """An OpenAI-compatible server at a URL ending in /v1: POST /chat/completions (SSE or one object)."""

    kind = "openai"
    CHAT = "/chat/completions"

    async def chat(self, call: ChatCall, on_piece: OnPiece | None) -> Outcome:
        """The answer to `call`; a streamed call passes each delta.content to `on_piece`."""
        body: dict[str, Any] = {**call.params, "model": call.model, "messages": call.messages}
        body["stream"] = call.stream
        if call.stream:
            # Without it the stream carries no token counts.
            body["stream_options"] = {"include_usage": True}
        where = self.chat_where
        answer = _Answer(call.model, on_piece if call.stream else None)
        async with self.http.post(self.chat_url, body, whole=not call.stream) as response:
            if not call.stream:
                self._whole(answer, where, self.object(where, await response.read()))
                return answer.outcome(self.url)
            async for line in iter_lines(response, self.idle):
                # Only `data:` lines carry events; blank lines, `event:` names and `:` comments do not.
                if not line.startswith(b"data:"):
                    continue
                payload = line[5:].strip()
                if payload == b"[DONE]":
                    return answer.outcome(self.url)
                self._event(answer, self.object(where, payload))
        raise RetryableError(f"{where}: the stream ended before [DONE]")

    @staticmethod
    def _whole(answer: _Answer, where: str, data: dict[str, Any]) -> None:
        try:
            choice = data["choices"][0]
            content = choice["message"].get("content")
        except (KeyError, IndexError, TypeError, AttributeError):
            snippet = str(data)[:_SNIPPET]
            raise PermanentError(f"{where}: the answer has no choices[0].message: {snippet}") from None
        # null content (a tool call, a refusal) is an empty answer, not a broken one.
        answer.add(content)
        answer.finish = choice.get("finish_reason") or "stop"
        OpenAIUpstream._tail(answer, data)

    @staticmethod
    def _event(answer: _Answer, event: dict[str, Any]) -> None:
        for choice in event.get("choices") or ():
            # n > 1 is not the gateway's business: the first choice is the answer.
            if isinstance(choice, dict) and choice.get("index", 0) == 0:
                delta = choice.get("delta")
                if isinstance(delta, dict):
                    answer.add(delta.get("content"))
                if choice.get("finish_reason"):
                    answer.finish = choice["finish_reason"]
        OpenAIUpstream._tail(answer, event)

    @staticmethod
    def _tail(answer: _Answer, data: dict[str, Any]) -> None:
        """The model and usage, wherever an object carries them (the last stream event for usage)."""
        if isinstance(data.get("model"), str) and data["model"]:
            answer.model = data["model"]
        counts = data.get("usage")
        if isinstance(counts, dict):
            answer.usage = usage(counts.get("prompt_tokens"), counts.get("completion_tokens"))

    async def warm(self, model: str) -> None:
        """A 1-token chat completion: servers that load models on demand (LM Studio, LocalAI, Ollama's /v1)
        load it for this, while GET /models only lists what could be loaded."""
        messages = [{"role": "user", "content": "hi"}]
        await self.post(self.CHAT, {"model": model, "messages": messages, "max_tokens": 1, "stream": False})

    async def check(self) -> None:
        """GET /models: answered without running a model."""
        await self.get("/models")

    async def models(self) -> list[str]:
        """The `id` of each entry of /models."""
        data = await self.get("/models")
        return [m["id"] for m in data.get("data") or () if isinstance(m, dict) and m.get("id")]


# The one table of upstream kinds (gateway.upstream_kind).
UPSTREAM_KINDS: dict[str, Callable[..., Upstream]] = {
    "ollama": OllamaUpstream,
    "openai": OpenAIUpstream,
}


def gateway_session() -> Http1Client:
    """One client for a pool's upstreams: lean HTTP/1.1, keep-alive, no connection limit (the gateway's
    queue bounds calls) and no cookie jar (a cookie one answer set must not ride along with other users')."""
    return Http1Client()
