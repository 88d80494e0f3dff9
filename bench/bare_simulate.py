"""The baseline for bench/simulate.py: a bare aiohttp + uvloop chat completions handler, nothing else.

`python bench/bare_simulate.py ANSWER_FILE --events N` answers every POST /v1/chat/completions with the
text of ANSWER_FILE: one JSON body, or with "stream": true a role event, N content events of equal
length, a finish event and [DONE], joined into one write as llmkit does when no latency is asked for.
With `--itl-ms MS` a stream is paced instead, as a handler is usually written: the role event, then
`await asyncio.sleep(MS / 1000)` and one write before each content event.
Prints `bare listening on http://127.0.0.1:PORT` once it listens.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
import uuid
from pathlib import Path

import orjson
import uvloop
from aiohttp import web

SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}


def split_even(text: str, parts: int) -> list[str]:
    """`text` cut into `parts` pieces of (nearly) equal length."""
    size = -(-len(text) // max(parts, 1))
    return [text[i : i + size] for i in range(0, len(text), size)]


def make_app(answer: str, events: int, itl: float = 0.0) -> web.Application:
    pieces = split_even(answer, events)

    async def chat(request: web.Request) -> web.StreamResponse:
        data = orjson.loads(await request.read())
        model = data.get("model", "gpt-4o")
        cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if not data.get("stream"):
            body = {
                "id": cid,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_bare",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": answer, "refusal": None},
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 10, "completion_tokens": 100, "total_tokens": 110},
            }
            return web.Response(body=orjson.dumps(body), content_type="application/json")

        def event(delta: dict[str, str], finish: str | None = None) -> bytes:
            chunk = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_bare",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            }
            return b"data: " + orjson.dumps(chunk) + b"\n\n"

        out = [event({"role": "assistant", "content": ""})]
        out += [event({"content": piece}) for piece in pieces]
        out += [event({}, "stop"), b"data: [DONE]\n\n"]
        response = web.StreamResponse(headers=SSE_HEADERS)
        await response.prepare(request)
        if itl > 0:
            await response.write(out[0])
            for one in out[1:-2]:
                await asyncio.sleep(itl)
                await response.write(one)
            await response.write(b"".join(out[-2:]))
        else:
            await response.write(b"".join(out))
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    return app


async def serve(answer: str, events: int, port: int = 0, itl: float = 0.0) -> None:
    runner = web.AppRunner(make_app(answer, events, itl), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=2048)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    sys.stdout.write(f"bare listening on http://127.0.0.1:{port}\n")
    sys.stdout.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("answer", type=Path)
    parser.add_argument("--events", type=int, default=25, help="content events per streamed answer")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: a free one)")
    parser.add_argument("--itl-ms", type=float, default=0.0, help="ms before each content event of a stream")
    args = parser.parse_args()
    uvloop.run(serve(args.answer.read_text(), args.events, args.port, args.itl_ms / 1000))


if __name__ == "__main__":
    main()
