"""Which tools an answer calls: a relevance ranking of the tools against the question, then tool_choice.

Every API shape (chat completions, Responses, Anthropic Messages, Ollama) turns its own fields into a
`ToolPolicy` and asks `pick_tools`. The ranking is a small BM25-like score: the question's words (lowercased,
lightly stemmed, stop words dropped) against each tool's name (weight 1), description (0.7) and parameter
names (0.35), each weighted by how few tools share the word; a tool at or above `RELEVANT` is relevant.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from multidict import istr

from llmkit.core.http import ApiError
from llmkit.simulate.structured import Tool, ToolCall, make_tool_call

RATE_HEADER = istr("x-llmkit-tool-call-rate")
RELEVANT = 0.6
_NAME_WEIGHT, _DESCRIPTION_WEIGHT, _PARAMETER_WEIGHT = 1.0, 0.7, 0.35
_CAMEL_RE = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_TERM_RE = re.compile(r"[^\W_]+")
# English and Indonesian function words, and the verbs every tool name starts with ("get_weather"): they
# say nothing about which tool fits.
_STOP = frozenset(
    """a an and are can could did do does for from has have how i in is it its me my of on or our please
    show tell that the their them then there these this those to use using was we what when where which who
    why will with would you your get set fetch call run make give want need let about into some any all
    tool tools function functions now today just also like yang dan di ke dari untuk apa ini itu saya
    aku kamu anda bisa tolong dengan ada adalah akan atau juga mau""".split()
)


@dataclass(frozen=True, slots=True)
class ToolPolicy:
    """What a request allows: the mode (none, auto, required, function), its tool, parallel calls, rate."""

    mode: str = "auto"
    name: str | None = None
    parallel: bool = True
    rate: float = 1.0


def stem(word: str) -> str:
    """A crude English stem, enough for "flights" to meet "flight" and "booking" to meet "book"."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 5 and word.endswith(("ches", "shes", "sses", "xes")):
        return word[:-2]
    if len(word) > 5 and word.endswith("ing"):
        return word[:-3]
    if len(word) > 4 and word.endswith("ed"):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def terms(text: str) -> set[str]:
    """The stemmed content words of `text`; snake_case, kebab-case and camelCase split into words."""
    words = _TERM_RE.findall(_CAMEL_RE.sub(" ", text).lower())
    return {stem(w) for w in words if (len(w) > 2 or w.isdigit()) and w not in _STOP}


def _parameter_names(schema: Any) -> str:
    properties = schema.get("properties") if isinstance(schema, dict) else None
    return " ".join(properties) if isinstance(properties, dict) else ""


def rank_tools(tools: Sequence[Tool], question: str) -> list[tuple[float, Tool]]:
    """Every tool with its relevance to `question`, best first (ties keep the request's order)."""
    wanted = terms(question)
    fields = [(terms(t.name), terms(t.description), terms(_parameter_names(t.parameters))) for t in tools]
    count = len(tools)
    scored: list[tuple[float, int, Tool]] = []
    for i, (tool, (name, description, parameters)) in enumerate(zip(tools, fields, strict=True)):
        score = 0.0
        for term in wanted:
            weight = (
                _NAME_WEIGHT
                if term in name
                else _DESCRIPTION_WEIGHT
                if term in description
                else _PARAMETER_WEIGHT
                if term in parameters
                else 0.0
            )
            if weight:
                shared = sum(1 for f in fields if term in f[0] or term in f[1] or term in f[2])
                score += weight * math.log(1 + (count + 1) / shared) / math.log(count + 2)
        scored.append((score, i, tool))
    scored.sort(key=lambda s: (-s[0], s[1]))
    return [(score, tool) for score, _, tool in scored]


def pick_tools(
    tools: Sequence[Tool], policy: ToolPolicy, question: str, after_result: bool, rng: random.Random
) -> list[Tool]:
    """The tools the answer calls, most relevant first; [] for a text answer.

    none: never. function: that tool. required: the relevant tools (the best one when none is). auto: the
    relevant tools, unless the conversation's last turn is a tool result (the agent loop then ends with
    text) or the rate draw says no. parallel_tool_calls false keeps only the first.
    """
    if not tools or policy.mode == "none":
        return []
    if policy.mode == "function":
        return [next(t for t in tools if t.name == policy.name)]
    if policy.mode == "auto" and (after_result or policy.rate <= 0):
        return []
    ranked = rank_tools(tools, question)
    chosen = [tool for score, tool in ranked if score >= RELEVANT]
    if policy.mode == "required":
        chosen = chosen or [ranked[0][1]]
    elif not chosen or (policy.rate < 1 and rng.random() >= policy.rate):
        return []
    return chosen if policy.parallel else chosen[:1]


def rate_for(headers: Mapping[str, str], configured: float) -> float:
    """simulate.tool_call_rate, or the x-llmkit-tool-call-rate header's (0..1; else a 400 naming it)."""
    raw = headers.get(RATE_HEADER)
    if raw is None:
        return configured
    try:
        value = float(raw.strip())
    except ValueError:
        value = math.nan
    if not 0 <= value <= 1:
        raise ApiError(
            400,
            "invalid_value",
            f"the {RATE_HEADER} header must be a number from 0 to 1; got {raw!r:.40}",
            param=str(RATE_HEADER),
        )
    return value


def decision_rng(seed: int | None, question: str, fallback: random.Random) -> random.Random:
    """The rng of the call decision and the arguments: fixed by the request's seed when it has one."""
    # Seeding with a string goes through SHA-512: the same in every process, unlike hash().
    return fallback if seed is None else random.Random(f"{seed}:{question}")


def cite(outputs: Sequence[tuple[str, str]], text: str) -> str:
    """The text answer after tool results: a line quoting each result, then the source's answer."""
    lines = []
    for name, output in outputs:
        excerpt = " ".join(output.split())
        excerpt = excerpt if len(excerpt) <= 200 else excerpt[:197] + "..."
        lines.append(f"According to {name}: {excerpt}" if name else f"According to the tool: {excerpt}")
    return "\n".join(lines) + "\n\n" + text if lines else text


def make_calls(
    tools: Sequence[Tool],
    policy: ToolPolicy,
    question: str,
    after_result: bool,
    text: str,
    rng: random.Random,
    seed: int | None = None,
    param: str = "tools",
) -> list[ToolCall]:
    """The calls an answer makes (see pick_tools), arguments valid against each tool's schema."""
    if not tools:
        return []
    chosen = decision_rng(seed, question, rng)
    return [
        make_tool_call(t, text, chosen, rng, param)
        for t in pick_tools(tools, policy, question, after_result, chosen)
    ]
