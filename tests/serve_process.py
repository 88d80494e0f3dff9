"""A server subprocess (tests/serve_app.py or `llmkit <command>`) that waits for its listening line."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

ROOT = Path(__file__).resolve().parent.parent
LLMKIT = str(Path(sys.executable).with_name("llmkit"))


def listening_re(command: str) -> re.Pattern[str]:
    """The exact line `llmkit COMMAND listening on http://127.0.0.1:PORT`."""
    return re.compile(rf"^llmkit {re.escape(command)} listening on (http://127\.0\.0\.1:(\d+))$")


class ServerProcess:
    """`python -m tests.serve_app ARGS` (or `llmkit COMMAND ARGS`) with stdout piped and stderr in a file."""

    def __init__(
        self,
        tmp_path: Path,
        *args: str,
        env: dict[str, str] | None = None,
        command: str | None = None,
        cwd: Path | None = None,
    ) -> None:
        if command is None:
            self.args = [sys.executable, "-m", "tests.serve_app", *args]
        else:
            self.args = [LLMKIT, command, *args]
        self.listening = listening_re(command or "serve-test")
        self.cwd = cwd or ROOT
        self.stderr_path = tmp_path / f"server-{time.monotonic_ns()}.stderr"
        self.env = {**os.environ, **(env or {})}
        if command == "gateway":
            # A gateway's platform store is a file: the test's own, never one in the repository.
            self.env.setdefault("LLMKIT_GATEWAY_PLATFORM_URL", f"sqlite:///{tmp_path}/platform.db")
        self.proc: subprocess.Popen[bytes] | None = None
        self.stdout_lines: list[str] = []
        self._buffer = b""
        self.url = ""
        self.port = 0

    def start(self) -> ServerProcess:
        """Start the process; does not wait for it to listen."""
        # stderr goes to a file: a pipe nobody reads fills up with access log lines and blocks the server.
        with self.stderr_path.open("wb") as stderr:
            self.proc = subprocess.Popen(
                self.args, cwd=self.cwd, env=self.env, stdout=subprocess.PIPE, stderr=stderr
            )
        return self

    def wait_listening(self, timeout: float = 60.0) -> str:
        """Block until the exact listening line appears on stdout; its URL."""
        line = self.read_line(timeout)
        match = self.listening.match(line or "")
        if match is None:
            raise AssertionError(f"expected the listening line, got {line!r}; stderr: {self.stderr}")
        self.url, self.port = match.group(1), int(match.group(2))
        return self.url

    def read_line(self, timeout: float) -> str | None:
        """The next stdout line, or None at EOF."""
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no stdout line within {timeout}s; stderr: {self.stderr}")
            if select.select([fd], [], [], left)[0]:
                chunk = os.read(fd, 4096)
                if not chunk:
                    return None
                self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\n", 1)
        line = raw.decode()
        self.stdout_lines.append(line)
        return line

    def rest_of_stdout(self) -> list[str]:
        """Every line printed to stdout, once the process has exited."""
        assert self.proc is not None and self.proc.stdout is not None
        tail = (self._buffer + self.proc.stdout.read()).decode()
        self._buffer = b""
        self.stdout_lines.extend(line for line in tail.splitlines() if line)
        return self.stdout_lines

    @property
    def stderr(self) -> str:
        """What the server wrote to stderr so far."""
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def signal(self, sig: int) -> None:
        """Send `sig` to the server (the supervisor when it runs workers)."""
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 60.0) -> int:
        """The exit code, once the process has exited."""
        assert self.proc is not None
        return self.proc.wait(timeout)

    def close(self) -> None:
        """Stop the process if it still runs (SIGTERM, then SIGKILL) and close its pipe."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
