"""Every `llmkit ...` and `curl ...` line of README.md, run as written, in order, against real processes.

The only changes the test makes are the ones a newcomer's machine makes for them: servers bind port 0 (the
README's ports may be taken here), so the README's addresses (and its Redis at 127.0.0.1:6379) are
replaced by the ones the processes really got. A server command started again on the same port replaces
the one running there, as it would for a person who stops one with Ctrl-C before starting the next.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from llmkit.settings import Settings
from tests.serve_process import LLMKIT, ROOT, ServerProcess
from tests.servers import RedisServer

README = ROOT / "README.md"
SERVERS = ("simulate", "aggregate", "gateway", "orchestrate")
# Subcommands that are clients of a server, not servers.
CLIENT_SUBCOMMANDS = {
    "orchestrate": {"submit", "status"},
    "simulate": {"init-db"},
    "gateway": {"keys", "tenants"},
}
# Client commands that reach a server at its default address when no --url is given.
DEFAULT_TARGET = {("orchestrate", "submit"): "orchestrate", ("orchestrate", "status"): "orchestrate"}
ADDRESS_RE = re.compile(r"127\.0\.0\.1:(\d+)")
# `NAME=value command ...`: the shell's way to give one command a variable (the simulator its admin key).
ASSIGNMENT_RE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", flags=re.S)
# How long a command that runs until Ctrl-C (the live `llmkit stats` view) runs before it gets one.
LIVE_S = 3.0


def readme_commands(text: str) -> list[str]:
    """The shell commands of the README's bash blocks: continued and quoted lines joined, comments dropped."""
    commands: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        pending = ""
        for line in block.splitlines():
            if not pending and (not line.strip() or line.lstrip().startswith("#")):
                continue
            pending += line.rstrip()
            if pending.endswith("\\"):
                pending = pending[:-1] + " "
                continue
            try:
                shlex.split(pending, comments=True)
            except ValueError:  # a quoted argument (a JSON body) goes on over the next line
                pending += "\n"
                continue
            commands.append(pending.strip())
            pending = ""
    return commands


def split_assignments(args: list[str]) -> tuple[dict[str, str], list[str]]:
    """The leading `NAME=value` words of a command (its extra environment) and the command itself."""
    env: dict[str, str] = {}
    while args and (match := ASSIGNMENT_RE.match(args[0])) is not None:
        env[match.group(1)] = match.group(2)
        args = args[1:]
    return env, args


def default_port(command: str) -> int:
    """The port a server subcommand binds when the README gives none (the defaults of llmkit's settings)."""
    return int(getattr(Settings(), command).port)


@dataclass
class Session:
    """What runs, in README order: the servers by the port the README gave them, and where they really are."""

    workdir: Path
    redis: RedisServer
    env: dict[str, str]
    servers: dict[int, ServerProcess] = field(default_factory=dict)
    ran: list[str] = field(default_factory=list)

    def substitute(self, arg: str) -> str:
        """An argument with the README's addresses replaced by the real ones."""
        arg = arg.replace("redis://127.0.0.1:6379", f"redis://127.0.0.1:{self.redis.port}")

        def real(match: re.Match[str]) -> str:
            server = self.servers.get(int(match.group(1)))
            return f"127.0.0.1:{server.port}" if server is not None else match.group(0)

        return ADDRESS_RE.sub(real, arg)

    def start_server(self, args: list[str], env: dict[str, str] | None = None) -> None:
        command, rest = args[1], [self.substitute(a) for a in args[2:]]
        port = default_port(command)
        if "--port" in rest:
            at = rest.index("--port")
            port = int(rest[at + 1])
            rest[at + 1] = "0"
        else:
            rest += ["--port", "0"]
        if port and port in self.servers:
            self.servers.pop(port).close()
        process_env = {**self.env, **(env or {})}
        process = ServerProcess(self.workdir, *rest, command=command, cwd=self.workdir, env=process_env)
        process.start()
        process.wait_listening()
        # Port 0 in the README means "any": nothing else addresses such a server.
        self.servers[port or -process.port] = process

    def run_client(
        self, args: list[str], env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        run_env = {**self.env, **(env or {})}
        rest = [self.substitute(a) for a in args[1:]]
        target = DEFAULT_TARGET.get((rest[0], rest[1])) if len(rest) > 1 else None
        if target is not None and "--url" not in rest:
            rest += ["--url", f"http://127.0.0.1:{self.servers[default_port(target)].port}"]
        live = rest[0] == "stats" and not {"--once", "--json"} & set(rest)
        argv = [LLMKIT, *rest]
        if not live:
            return subprocess.run(
                argv, cwd=self.workdir, env=run_env, capture_output=True, text=True, timeout=120
            )
        watcher = subprocess.Popen(
            argv, cwd=self.workdir, env=run_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            out, err = watcher.communicate(timeout=LIVE_S)
            return subprocess.CompletedProcess(argv, watcher.returncode, out, f"{err}\nended before Ctrl-C")
        except subprocess.TimeoutExpired:
            watcher.send_signal(signal.SIGINT)
            out, err = watcher.communicate(timeout=30)
            return subprocess.CompletedProcess(argv, watcher.returncode, out, err)

    def run_curl(self, args: list[str]) -> subprocess.CompletedProcess[str]:
        # --fail-with-body: a 4xx or 5xx answer fails the example, as it would disappoint its reader.
        argv = [
            "curl",
            "-sS",
            "--fail-with-body",
            "--max-time",
            "60",
            *(self.substitute(a) for a in args[1:]),
        ]
        return subprocess.run(argv, cwd=self.workdir, capture_output=True, text=True, timeout=120)

    def close(self) -> None:
        for server in self.servers.values():
            server.close()


@pytest.fixture
def session(tmp_path: Path, redis_factory: Callable[[], RedisServer]) -> Iterator[Session]:
    """A fresh folder like a fresh clone's (its zresponse/ answers, nothing else) and a dedicated Redis."""
    workdir = tmp_path / "clone"
    workdir.mkdir()
    (workdir / "zresponse").symlink_to(ROOT / "zresponse")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMKIT_")}
    made = Session(workdir, redis_factory(), {**env, "LLMKIT_SERVER_ACCESS_LOG": "false"})
    yield made
    made.close()


def _is_server(args: list[str]) -> bool:
    return args[1] in SERVERS and (len(args) < 3 or args[2] not in CLIENT_SUBCOMMANDS.get(args[1], set()))


def test_readme_has_an_example_per_command() -> None:
    names = {shlex.split(c)[1] for c in readme_commands(README.read_text()) if c.startswith("llmkit ")}
    assert names == {"simulate", "aggregate", "publish", "gateway", "orchestrate", "config", "cache", "stats"}


def test_every_readme_command_runs_as_written(session: Session) -> None:
    commands = readme_commands(README.read_text())
    assert len(commands) > 20
    for command in commands:
        args = shlex.split(command, comments=True)
        if args[-1] == "&":
            args = args[:-1]
        env, args = split_assignments(args)
        if args[0] == "make":
            continue  # the two set-up commands: this suite runs under `make test`
        if args[0] == "llmkit" and _is_server(args):
            session.start_server(args, env)
            continue
        if args[0] == "llmkit":
            done = session.run_client(args, env)
        elif args[0] == "curl":
            done = session.run_curl(args)
        else:
            raise AssertionError(f"README command the test does not know how to run: {command}")
        assert done.returncode == 0, f"{command}\nexit {done.returncode}\n{done.stdout}\n{done.stderr}"
        session.ran.append(command)
    for server in session.servers.values():
        assert "Traceback" not in server.stderr, server.stderr
