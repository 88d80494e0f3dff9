"""The analytics writer process (`python -m llmkit.platform.analytics.child`).

Started by `offload.OffloadedStore`, which sends the store's URL and pool size as the first frame on stdin
(never on the command line: the URL may hold a password). It opens the store, says "ready", then for each
frame
writes the batch and answers one line: "ok", "backend <message>" (the store failed: the batch is kept
and retried) or "records <error class>" (the store cannot take these records: the batch is dropped).
It exits when stdin closes, or when the process that started it is gone.
"""

from __future__ import annotations

import asyncio
import marshal
import os
import sys

from llmkit.errors import BackendError, ConfigError
from llmkit.platform.analytics import analytics_store_from_url
from llmkit.platform.analytics.offload import FRAME, OK, READY


async def frame(reader: asyncio.StreamReader) -> bytes:
    """The next frame's payload (IncompleteReadError at the end of the pipe)."""
    (size,) = FRAME.unpack(await reader.readexactly(FRAME.size))
    return await reader.readexactly(size)


async def serve() -> int:
    """Write batches from stdin until it closes."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**31)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin.buffer)
    out = sys.stdout.buffer
    try:
        url, pool_size = marshal.loads(await frame(reader))
        store = analytics_store_from_url(url, pool_size=pool_size)
        await store.open()
    except asyncio.IncompleteReadError:
        return 0
    except (BackendError, ConfigError) as exc:
        out.write(f"cannot open the store: {exc}\n".encode())
        out.flush()
        return 1
    out.write(READY + b"\n")
    out.flush()
    try:
        while True:
            try:
                payload = await frame(reader)
            except asyncio.IncompleteReadError:
                return 0  # the parent closed the pipe: done
            try:
                await store.write(marshal.loads(payload))
                answer = OK
            except BackendError as exc:
                answer = b"backend " + str(exc).replace("\n", " ").encode()
            except Exception as exc:  # records the store cannot take; never their content in the answer
                answer = b"records " + type(exc).__name__.encode()
            out.write(answer + b"\n")
            out.flush()
    finally:
        await store.close()


def main() -> None:
    # Below the serving process on a shared core: requests first, batches with what is left over.
    os.nice(10)
    sys.exit(asyncio.run(serve()))


if __name__ == "__main__":
    main()
