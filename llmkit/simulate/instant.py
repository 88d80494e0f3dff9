"""Chat streams with nothing to wait for: their events after the shared head, remembered per answer."""

from __future__ import annotations

from llmkit.core.memo import Memo
from llmkit.simulate.openai import ChunkWriter
from llmkit.simulate.stream import INSTANT_CHUNK_TOKENS, plan_pieces

# (id of the answer's token list, n, finish reason, usage) -> (that token list, the events after the head).
# Every instant stream of the same answer sends the same bytes but for its id and created time, and
# building its events costs more than the rest of the request. The token lists come from the memo of cut
# answers; keeping the list in the value pins its id, so an id is never mistaken for another list's.
_EVENTS: Memo[tuple[int, int, str, tuple[int, int] | None], tuple[list[str], list[bytes]]] = Memo(
    max_weight=16_000_000
)


def instant_chat_events(
    tokens: list[str], n: int, finish_reason: str, usage: tuple[int, int] | None
) -> list[bytes]:
    """The role, content, finish and (with `usage` = (prompt, completion) tokens) usage events of a chat
    stream of `tokens`, each without the head every event of one stream starts with (`stream_head`)."""
    key = (id(tokens), n, finish_reason, usage)
    known = _EVENTS.get(key)
    if known is not None and known[0] is tokens:
        return known[1]
    writer = ChunkWriter(None, n)
    pieces, _ = plan_pieces(tokens, INSTANT_CHUNK_TOKENS)
    events = [writer.role(i) for i in range(n)]
    for piece in pieces:
        events.extend(writer.content(i, piece) for i in range(n))
    events.extend(writer.finish(i, finish_reason) for i in range(n))
    if usage is not None:
        events.append(writer.usage(*usage))
    _EVENTS.put(key, (tokens, events), sum(map(len, events)))
    return events
