"""schemathesis against the four servers as real processes: `python -m tests.openapi_fuzz [--max-examples N]`.

The test (tests/integration/test_openapi_fuzz.py) runs it with few examples; `make fuzz` with many.
schemathesis runs in a subprocess: its own warnings would fail pytest's `filterwarnings = error`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tests.serve_process import ServerProcess

SERVERS = ("simulate", "gateway", "orchestrate", "aggregate")
CONFIG = Path(__file__).with_name("openapi_fuzz.toml")
SCHEMATHESIS = str(Path(sys.executable).with_name("schemathesis"))
# Quiet servers answering at once, the orchestrator without its per-session limit: the fuzzer's requests
# are many, and the latency model and rate limits are not under test (their 429s would hide the 200s).
# The simulator's and the gateway's admin key: openapi_fuzz.toml sends it to /admin/* and /api/admin/*
# (schemathesis reads it from its env).
ADMIN_KEY = "fuzz-simulate-admin-key"
ENV = {
    "LLMKIT_SERVER_ACCESS_LOG": "false",
    "LLMKIT_SIMULATE_ADMIN_KEY": ADMIN_KEY,
    "LLMKIT_GATEWAY_ADMIN_KEY": ADMIN_KEY,
    "LLMKIT_SIMULATE_TTFT_MS": "0",
    "LLMKIT_SIMULATE_ITL_MS": "0",
    "LLMKIT_ORCHESTRATE_RATE_LIMIT_REQUESTS": "0",
}


def server_args(name: str, tmp: Path, simulator_url: str) -> list[str]:
    """The flags of one server: port 0, the echo backend, a temporary SQLite file, the simulator upstream."""
    args = ["--port", "0"]
    if name == "gateway":
        args += ["--upstream", f"{simulator_url}/v1", "--kind", "openai"]
    elif name == "orchestrate":
        args += ["--backend", "echo"]
    elif name == "aggregate":
        args += ["--store", f"sqlite:///{tmp / 'aggregate.db'}"]
    return args


@contextlib.contextmanager
def running(name: str, tmp: Path) -> Iterator[str]:
    """The server `name` as a process (the gateway with a simulator behind it); its URL."""
    env = {**ENV, "LLMKIT_STORAGE_DATA_DIR": str(tmp)}
    with contextlib.ExitStack() as stack:
        simulator_url = ""
        if name == "gateway":
            upstream = stack.enter_context(ServerProcess(tmp, "--port", "0", command="simulate", env=env))
            simulator_url = upstream.wait_listening()
            # The simulator's /v1/embeddings too: semantic and hybrid search and rag answer.
            env = {
                **env,
                "LLMKIT_GATEWAY_EMBEDDINGS_URL": simulator_url,
                "LLMKIT_GATEWAY_EMBEDDINGS_DIMENSIONS": "64",
            }
        server = stack.enter_context(
            ServerProcess(tmp, *server_args(name, tmp, simulator_url), command=name, env=env)
        )
        yield server.wait_listening()


def schemathesis(url: str, max_examples: int, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run schemathesis on `url`/openapi.json: every check, a fixed number of examples, derandomized."""
    command = [
        SCHEMATHESIS,
        "--config-file",
        str(CONFIG),
        "--no-color",
        "run",
        f"{url}/openapi.json",
        "--max-examples",
        str(max_examples),
        "--generation-deterministic",
        "--workers",
        "1",
        "--request-timeout",
        "10",
        "--output-sanitize",
        "false",
    ]
    # In a fresh directory: schemathesis replays the failures it cached under ./.schemathesis.
    env = {**os.environ, "LLMKIT_SIMULATE_ADMIN_KEY": ADMIN_KEY}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False)


def fuzz(name: str, max_examples: int, tmp: Path) -> subprocess.CompletedProcess[str]:
    """Start `name` and fuzz it."""
    with running(name, tmp) as url:
        return schemathesis(url, max_examples, Path(tempfile.mkdtemp(dir=tmp)))


def main() -> int:
    """Fuzz every server (or those named); exit 1 when any check failed."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("servers", nargs="*", metavar="SERVER", help=f"{', '.join(SERVERS)} (default: all)")
    parser.add_argument("--max-examples", type=int, default=200)
    options = parser.parse_args()
    unknown = set(options.servers) - set(SERVERS)
    if unknown:
        parser.error(f"unknown servers {', '.join(sorted(unknown))}; choose from {', '.join(SERVERS)}")
    failed = []
    with tempfile.TemporaryDirectory() as scratch:
        for name in options.servers or SERVERS:
            start = time.monotonic()
            done = fuzz(name, options.max_examples, Path(scratch))
            print(done.stdout, done.stderr, sep="\n")
            print(f"{name}: exit {done.returncode} in {time.monotonic() - start:.1f} s", flush=True)
            if done.returncode != 0:
                failed.append(name)
    print("failed: " + ", ".join(failed) if failed else "every server passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
