"""How long an answer is: `max_tokens`, vLLM's `ignore_eos` and `min_tokens`, `simulate.output_tokens`."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from llmkit.core.memo import Memo
from llmkit.core.tokenizer import tokenize
from llmkit.settings import SimulateSettings

# The most tokens an answer is lengthened to (ignore_eos, min_tokens, lorem): a large model's context
# window. A longer one would only fill the simulator's memory; cutting by max_tokens has no such limit.
MAX_ANSWER_TOKENS = 131_072
# What separates an answer from its repetition when a request asks for more tokens than it has.
CONTINUATION = "\n\n"


@dataclass(frozen=True, slots=True)
class Cut:
    """An answer text cut for one request: its tokens, the finish reason and the tokens joined."""

    tokens: list[str]
    finish_reason: str
    text: str


# Tokenizing an answer costs as much as the rest of a request, and the same few answers come back again
# and again: remember the cuts, up to this many tokens in all (a few MB). Cut token lists are shared, so
# nobody may modify one.
_CUTS: Memo[tuple[str, tuple[str, ...], int | None], Cut] = Memo(max_weight=256_000)


def cut_text(text: str, stop: tuple[str, ...], max_tokens: int | None) -> Cut:
    """`text` cut before the first `stop` sequence and after `max_tokens` tokens (remembered per text)."""
    key = (text, stop, max_tokens)
    cut = _CUTS.get(key)
    if cut is not None:
        return cut
    if stop:
        at = min((i for i in (text.find(s) for s in stop) if i >= 0), default=-1)
        if at >= 0:
            text = text[:at]
    tokens = tokenize(text)
    if max_tokens is not None and len(tokens) > max_tokens:
        tokens = tokens[:max_tokens]
        cut = Cut(tokens, "length", "".join(tokens))
    else:
        cut = Cut(tokens, "stop", text)
    return _CUTS.put(key, cut, len(tokens) + 1)


@dataclass(frozen=True, slots=True)
class OutputLengths:
    """A normal distribution of answer lengths in tokens, truncated at >= 1."""

    mean: float
    stdev: float

    def draw(self, rng: random.Random) -> int:
        """One length: a normal draw, redrawn while below 1 (clamped to 1 if that keeps happening)."""
        for _ in range(16):
            length = round(rng.gauss(self.mean, self.stdev))
            if length >= 1:
                return length
        return 1


def output_lengths(settings: SimulateSettings) -> OutputLengths | None:
    """The distribution simulate.output_tokens describes, or None when it is empty."""
    parsed = settings.output_lengths()
    return None if parsed is None else OutputLengths(*parsed)


@dataclass(frozen=True, slots=True)
class Want:
    """The length one request asks for: exactly `exact` tokens, or at least `at_least`; at most `at_most`."""

    exact: int | None = None
    at_least: int = 0
    at_most: int | None = None
    # The finish reason when the answer is made exactly `exact` long: "length" for ignore_eos (the
    # answer ran into max_tokens, as vLLM reports it), "stop" for a length drawn from the distribution.
    exact_reason: str = "length"

    @property
    def plain(self) -> bool:
        """True when only `at_most` matters: the answer is cut, never made longer."""
        return self.exact is None and self.at_least <= 0


def want_for(
    max_tokens: int | None,
    ignore_eos: bool,
    min_tokens: int | None,
    lengths: OutputLengths | None,
    rng: random.Random,
) -> Want:
    """The length a request wants: ignore_eos + max_tokens -> exactly max_tokens; no max_tokens and a
    `simulate.output_tokens` distribution -> a drawn length (at least min_tokens); min_tokens -> at least."""
    at_least = min_tokens or 0
    if ignore_eos and max_tokens is not None:
        return Want(max_tokens, at_least, max_tokens)
    if max_tokens is None and lengths is not None:
        return Want(max(lengths.draw(rng), at_least), at_least, None, "stop")
    return Want(None, at_least, max_tokens)


def want_of(
    max_tokens: int | None,
    ignore_eos: bool,
    min_tokens: int | None,
    lengths: OutputLengths | None,
    lorem: bool,
    rng: random.Random,
) -> Want | None:
    """`want_for`, or None (cut by max_tokens only) for the usual request that asks nothing of its length.
    A lorem answer is generated to the requested length, as with ignore_eos."""
    ignore_eos = ignore_eos or lorem
    if not ignore_eos and not min_tokens and (lengths is None or max_tokens is not None):
        return None
    return want_for(max_tokens, ignore_eos, min_tokens, lengths, rng)


# Lengthened answers, remembered as cuts are (the same answer at the same length comes back in a load test).
_FITTED: Memo[tuple[str, tuple[str, ...], int, str], Cut] = Memo(max_weight=512_000)


def fit_text(text: str, stop: tuple[str, ...], want: Want) -> Cut:
    """`text` cut by `stop` and made the length `want` says: repeated past its end when too short, cut when
    too long. The tokens always re-tokenize to themselves, so a client counting the text gets the usage."""
    if want.plain:
        return cut_text(text, stop, want.at_most)
    natural = cut_text(text, stop, None)
    if want.exact is not None:
        goal, reason = want.exact, want.exact_reason
    else:
        goal, reason = max(want.at_least, len(natural.tokens)), "stop"
    if want.at_most is not None and goal > want.at_most:
        goal, reason = want.at_most, "length"
    if goal > MAX_ANSWER_TOKENS:
        goal, reason = MAX_ANSWER_TOKENS, "length"
    if goal <= len(natural.tokens):
        if goal == len(natural.tokens) and want.exact is None:
            return natural
        tokens = natural.tokens[:goal]
        return Cut(tokens, reason, "".join(tokens))
    key = (text, stop, goal, reason)
    known = _FITTED.get(key)
    if known is not None:
        return known
    return _FITTED.put(key, _lengthen(natural.text, text, goal, reason), goal + 1)


def _lengthen(start: str, text: str, goal: int, reason: str) -> Cut:
    # The continuation repeats the whole answer (stop sequences cut only the answer's own text); an empty
    # answer continues with lorem ipsum so that any length can be reached.
    filler = CONTINUATION + (text if text.strip() else LOREM)
    per_filler = max(1, len(tokenize(filler)) - 2)
    have = len(tokenize(start))
    repeats = max(1, math.ceil((goal - have) / per_filler) + 1)
    long_text = start + filler * repeats
    tokens = tokenize(long_text)
    while len(tokens) < goal:
        long_text += filler * repeats
        tokens = tokenize(long_text)
    tokens = tokens[:goal]
    return Cut(tokens, reason, "".join(tokens))


LOREM = (
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et "
    "dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation ullamco laboris nisi ut aliquip "
    "ex ea commodo consequat. Duis aute irure dolor in reprehenderit in voluptate velit esse cillum dolore "
    "eu fugiat nulla pariatur. Excepteur sint occaecat cupidatat non proident, sunt in culpa qui officia "
    "deserunt mollit anim id est laborum."
)
_LOREM_WORDS = LOREM.split()
# Lorem answers start at one of this many places in the text: few enough distinct answers that their cuts
# are remembered, enough that answers differ.
LOREM_STARTS = len(_LOREM_WORDS)
# The length of a lorem answer before `fit_text` makes it what the request wants.
LOREM_WORDS = 200


def lorem_text(rng: random.Random) -> str:
    """About LOREM_WORDS words of lorem ipsum, starting at a word `rng` picks."""
    start = rng.randrange(LOREM_STARTS)
    words = [_LOREM_WORDS[(start + i) % LOREM_STARTS] for i in range(LOREM_WORDS)]
    text = " ".join(words)
    return text[0].upper() + text[1:]
