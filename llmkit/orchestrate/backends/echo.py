"""EchoBackend: answers with the prompt itself (the seed's EchoWorker), for tests and benchmarks."""

from __future__ import annotations

import asyncio
import re

from llmkit.errors import ConfigError
from llmkit.orchestrate.backends.base import JobSpec, OnDelta

# A word with the whitespace around it: the pieces joined give back the prompt exactly.
_PIECE = re.compile(r"\s*\S+\s*")


def pieces(text: str, words_per_piece: int = 1) -> list[str]:
    """`text` cut into pieces of `words_per_piece` words (whitespace kept), joining back to `text`."""
    words = _PIECE.findall(text) or ([text] if text else [])
    if words_per_piece <= 1:
        return words
    return ["".join(words[i : i + words_per_piece]) for i in range(0, len(words), words_per_piece)]


class EchoBackend:
    """Returns the prompt; streams it word by word, waiting `delay_s` before each piece."""

    name = "echo"

    def __init__(self, delay_s: float = 0.0, tokens_per_delta: int = 1) -> None:
        if delay_s < 0 or tokens_per_delta < 1:
            raise ConfigError(
                f"echo backend: delay_s must be >= 0 and tokens_per_delta >= 1; "
                f"got {delay_s} and {tokens_per_delta}"
            )
        self.delay_s = delay_s
        self.tokens_per_delta = tokens_per_delta

    async def run(self, job: JobSpec, on_delta: OnDelta | None = None) -> str:
        """The prompt; a streamed job gets it piece by piece through `on_delta`."""
        prompt = job.prompt
        if on_delta is None or not job.stream:
            # delay 0 is the benchmarked path (> 10,000 jobs/s through the server): no split, no sleep.
            if self.delay_s:
                # As long as the streamed answer takes: the delay models generation time per piece.
                await asyncio.sleep(self.delay_s * len(pieces(prompt, self.tokens_per_delta)))
            return prompt
        for part in pieces(prompt, self.tokens_per_delta):
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            await on_delta(part)
        return prompt

    async def close(self) -> None:
        """Nothing to release."""
