"""Plausible log probabilities of an answer's own tokens: chat's `logprobs.content` and the legacy
completions' `logprobs` object, whole or per streamed piece.

Each position gets made-up logits: the answer's token leads by a gap, MAX_TOP_LOGPROBS alternatives fall
off below it (drawn from the answer's other tokens and common English ones) and the rest of a vocabulary
is one bucket; their log-softmax gives logprobs <= 0, the answer's token the most likely, alternatives
sorted best first. The draw comes from the request's `seed` and the answer (the same request and seed give
the same numbers), else from the request's rng. Nothing here runs unless a request asks for logprobs.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from llmkit.simulate.bounds import MAX_TOP_LOGPROBS
from llmkit.simulate.openai import Answer, ChatRequest, ChunkWriter
from llmkit.simulate.stream import StreamPlan, StreamSender

# What alternatives are drawn from besides the answer's own tokens (so there are always enough of them).
_COMMON = (
    " the", " a", " and", " of", " to", " is", " in", " that", " it", ",", ".", " for", " with", " as",
    " on", " this", " be", " are", " was", "\n", " I", " you", " not", " or", " an", " at", " by", " from",
    ":", " can", "'s", " we", " they", " there",
)  # fmt: skip
# The gap between the answer's token and the best alternative, in nats on average; then the mean drop from
# one alternative to the next, and how many tokens' worth the rest of the vocabulary weighs at the last one.
_MEAN_GAP = 2.5
_MEAN_STEP = 0.8
_TAIL_TOKENS = 40.0


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """One position: the answer's token, its logprob, and the most likely tokens there, best first (the
    answer's token leading, then MAX_TOP_LOGPROBS alternatives)."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...]


def logprob_rng(seed: int | None, tokens: Sequence[str], rng: random.Random) -> random.Random:
    """The generator of an answer's logprobs: fixed by (seed, answer) when the request has a seed."""
    if seed is None:
        return rng
    # A str seed is hashed with SHA-512: the same in every process and run, whatever PYTHONHASHSEED.
    return random.Random(f"logprobs\x00{seed}\x00{''.join(tokens)}")


def token_logprobs(tokens: Sequence[str], rng: random.Random) -> list[TokenLogprob]:
    """The logprobs of each of `tokens`, each with MAX_TOP_LOGPROBS alternatives."""
    pool = list(dict.fromkeys([*tokens, *_COMMON]))
    made = []
    for token in tokens:
        logits = [rng.expovariate(1 / _MEAN_GAP)]  # the answer's token; the alternatives are all below 0
        level = 0.0
        for _ in range(MAX_TOP_LOGPROBS):
            level -= rng.expovariate(1 / _MEAN_STEP)
            logits.append(level)
        tail = level + math.log(_TAIL_TOKENS)
        top = max(logits[0], tail)
        norm = top + math.log(math.fsum(math.exp(z - top) for z in (*logits, tail)))
        others = [t for t in rng.sample(pool, MAX_TOP_LOGPROBS + 1) if t != token][:MAX_TOP_LOGPROBS]
        chosen = logits[0] - norm
        ranked = ((token, chosen), *((t, z - norm) for t, z in zip(others, logits[1:], strict=False)))
        made.append(TokenLogprob(token, chosen, ranked))
    return made


def _chat_entry(entry: TokenLogprob, top: int) -> dict[str, Any]:
    alternatives = [
        {"token": token, "logprob": logprob, "bytes": list(token.encode())}
        for token, logprob in entry.top[:top]
    ]
    return {
        "token": entry.token,
        "logprob": entry.logprob,
        "bytes": list(entry.token.encode()),
        "top_logprobs": alternatives,
    }


def chat_logprobs(entries: Sequence[TokenLogprob], top: int) -> dict[str, Any]:
    """Chat's `choices[i].logprobs`: one content entry per token with `top` alternatives."""
    return {"content": [_chat_entry(entry, top) for entry in entries], "refusal": None}


def chat_piece_logprobs(entries: Sequence[TokenLogprob], top: int, counts: Sequence[int]) -> list[bytes]:
    """The JSON `logprobs` of each streamed piece (`counts` tokens each): the entries of its own tokens."""
    pieces, start = [], 0
    for count in counts:
        pieces.append(orjson.dumps(chat_logprobs(entries[start : start + count], top)))
        start += count
    return pieces


def legacy_logprobs(
    entries: Sequence[TokenLogprob], top: int, offset: int = 0, first_unknown: bool = False
) -> Any:
    """The legacy completions' `logprobs`: tokens, token_logprobs, top_logprobs ({token: logprob}, `top`
    of them) and text_offset (each token's start in the choice's text, from `offset`). `first_unknown`:
    the first token opens an echoed prompt, which nothing precedes (OpenAI's null)."""
    tokens: list[str] = []
    token_logprobs: list[float | None] = []
    tops: list[dict[str, float] | None] = []
    offsets: list[int] = []
    for entry in entries:
        tokens.append(entry.token)
        token_logprobs.append(entry.logprob)
        tops.append(dict(entry.top[:top]))
        offsets.append(offset)
        offset += len(entry.token)
    if first_unknown and tokens:
        token_logprobs[0] = tops[0] = None
    return {"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": tops, "text_offset": offsets}


def legacy_piece_logprobs(
    entries: Sequence[TokenLogprob], top: int, spans: Sequence[int], first_unknown: bool = False
) -> list[bytes]:
    """The JSON legacy `logprobs` of each streamed piece (`spans` tokens each), text offsets counted
    across the pieces; `first_unknown` as in legacy_logprobs."""
    pieces, start, offset = [], 0, 0
    for k, span in enumerate(spans):
        own = entries[start : start + span]
        pieces.append(orjson.dumps(legacy_logprobs(own, top, offset, first_unknown and k == 0)))
        start += span
        offset += sum(len(entry.token) for entry in own)
    return pieces


class LogprobStreamSender(StreamSender):
    """A chat text stream whose content events carry the logprobs of their own tokens."""

    def __init__(
        self,
        request: web.Request,
        response: web.StreamResponse,
        writer: ChunkWriter,
        plan: StreamPlan,
        capacity: int,
        piece_logprobs: list[bytes],
    ) -> None:
        super().__init__(request, response, writer, plan, capacity)
        self.chunks = writer
        self.piece_logprobs = piece_logprobs

    def _step(self, k: int) -> tuple[list[bytes], int]:
        plan, piece, logprobs = self.plan, self.plan.pieces[k], self.piece_logprobs[k]
        events = [self.chunks.content_logprobs(i, piece, logprobs) for i in range(plan.n)]
        return events, plan.piece_tokens[k] * plan.n


def _answer_entries(chat: ChatRequest, answer: Answer, rng: random.Random) -> list[TokenLogprob] | None:
    if not chat.logprobs or answer.tool_calls:
        return None  # tool calls carry no content, so no content logprobs
    return token_logprobs(answer.tokens, logprob_rng(chat.seed, answer.tokens, rng))


def answer_logprobs(chat: ChatRequest, answer: Answer, rng: random.Random) -> dict[str, Any] | None:
    """A chat choice's `logprobs` when the request asks for them (None: null, as for tool calls)."""
    entries = _answer_entries(chat, answer, rng)
    return None if entries is None else chat_logprobs(entries, chat.top_logprobs)


def logprob_sender(
    request: web.Request,
    response: web.StreamResponse,
    writer: ChunkWriter,
    plan: StreamPlan,
    capacity: int,
    chat: ChatRequest,
    answer: Answer,
    rng: random.Random,
) -> StreamSender:
    """The sender of a planned chat stream: with each piece's logprobs when the request asks for them."""
    entries = _answer_entries(chat, answer, rng)
    if entries is None:
        return StreamSender(request, response, writer, plan, capacity)
    pieces = chat_piece_logprobs(entries, chat.top_logprobs, plan.piece_tokens)
    return LogprobStreamSender(request, response, writer, plan, capacity, pieces)
