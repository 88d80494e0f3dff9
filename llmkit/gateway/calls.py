"""What the gateway asks an upstream (ChatCall) and what it gets back (Outcome)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

# Called with each piece of the answer as it arrives (synchronously: it only stores and wakes listeners).
OnPiece = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class ChatCall:
    """One upstream chat call: model, the whole conversation, sampling parameters, streamed or not."""

    model: str
    # [{"role": "user", "content": "..."}, ...]: content is text (parts already joined).
    messages: tuple[Mapping[str, Any], ...]
    # OpenAI names: temperature, top_p, max_tokens, stop, seed, presence_penalty, frequency_penalty,
    # response_format...; each upstream kind translates them (Ollama: options.num_predict, ...).
    params: Mapping[str, Any] = field(default_factory=dict)
    stream: bool = False


@dataclass(slots=True)
class Outcome:
    """A finished answer: its text, the model that wrote it, why it stopped, token counts if known."""

    content: str
    model: str
    finish_reason: str = "stop"
    # {"prompt_tokens", "completion_tokens", "total_tokens"}, or None when the upstream did not say.
    usage: dict[str, int] | None = None
    # The upstream URL that answered ("" for answers that did not come from an upstream).
    upstream: str = ""
