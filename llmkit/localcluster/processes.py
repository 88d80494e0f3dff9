"""Processes on loopback: free ports, binaries, detached starts with a log, and stops by recorded pid."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def free_port(taken: set[int] | None = None) -> int:
    """A TCP port nothing listens on right now (and not in `taken`, which it joins)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if taken is None:
            return port
        if port not in taken:
            taken.add(port)
            return port


def find_binary(*names: str) -> str | None:
    """The first of `names` on PATH (or an executable absolute path), else None."""
    for name in names:
        found = shutil.which(name) or (name if os.path.isabs(name) and os.access(name, os.X_OK) else None)
        if found:
            return found
    return None


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """Block until something accepts on 127.0.0.1:port, or raise RuntimeError naming the process."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode} before listening on {port}")
        if port_open(port):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{proc.args!r} did not listen on {port} within {timeout}s")


def start_time(pid: int) -> int | None:
    """The kernel's start time of a process (clock ticks since boot), None when it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces: split after its last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


@dataclass
class Started:
    """One process a cluster started: what it is, how to reach it, and how to stop exactly it."""

    role: str
    index: int
    url: str
    pid: int
    started: int
    log: str
    stop_signal: int = int(signal.SIGTERM)
    extra: dict[str, Any] = field(default_factory=dict)
    # How it was started, so `restart` can start it again the same way (its environment is the cluster's).
    args: list[str] = field(default_factory=list)
    cwd: str | None = None

    @property
    def name(self) -> str:
        return f"{self.role}-{self.index}"

    def alive(self) -> bool:
        """Still the process that was started (a pid the kernel gave to another process is not)."""
        return start_time(self.pid) == self.started


def spawn(
    role: str,
    index: int,
    url: str,
    args: list[str],
    log: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    stop_signal: int = signal.SIGTERM,
    **popen: Any,
) -> Started:
    """Start `args` in a session of its own (it outlives its starter), output in `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
            **popen,
        )
    started = start_time(proc.pid)
    # Dead already (a bad flag): recorded with start time 0, so it reads as down, never as someone else.
    return Started(
        role,
        index,
        url,
        proc.pid,
        started or 0,
        str(log),
        int(stop_signal),
        args=list(args),
        cwd=str(cwd) if cwd is not None else None,
    )


def _signal_group(process: Started, sig: int) -> None:
    """Signal the process's session (its pid is the group id: spawn made it a leader), else the pid."""
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        return
    except PermissionError:
        os.kill(process.pid, sig)


def stop_all(processes: Iterable[Started], timeout: float = 20.0) -> list[Started]:
    """Stop each with its stop signal, SIGKILL what is left after `timeout`; the ones that needed it."""
    alive = [process for process in processes if process.alive()]
    for process in alive:
        _signal_group(process, process.stop_signal)
    deadline = time.monotonic() + timeout
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [process for process in alive if process.alive()]
    for process in alive:
        _signal_group(process, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while any(process.alive() for process in alive) and time.monotonic() < deadline:
        time.sleep(0.05)
    return alive


def log_tail(path: str | Path, lines: int = 20) -> str:
    """The last lines of a log file ('' when it does not exist)."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
