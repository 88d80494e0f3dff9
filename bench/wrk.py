"""wrk's summary as numbers, for the bench scripts."""

from __future__ import annotations

import re


def parse_wrk(out: str) -> dict[str, float]:
    """Requests/s, non-2xx answers and socket errors from wrk's printed summary."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if rps is None:
        raise RuntimeError(f"unexpected wrk output: {out}")
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "rps": float(rps.group(1)),
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": sum(int(x) for x in sock.groups()) if sock else 0,
    }
