"""Run an aiohttp app: AppRunner + TCPSite, drain on SIGTERM/SIGINT, pre-forked SO_REUSEPORT workers."""

from __future__ import annotations

import asyncio
import collections
import gc
import inspect
import logging
import os
import select
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, NoReturn

from aiohttp import web

from llmkit.core.workers import PEERS_KEY, Peers
from llmkit.errors import ConfigError, ListenError, LlmkitError

AppFactory = Callable[[], web.Application | Awaitable[web.Application]]
ReadyCallback = Callable[[str, int], None]

logger = logging.getLogger("llmkit.serve")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

# Called the moment a server is told to stop, before it drains: the place to stop taking work at once.
ON_STOP_KEY = web.AppKey[list[Callable[[], None]]]("llmkit_on_stop")


def on_stop(app: web.Application, callback: Callable[[], None]) -> None:
    """Call `callback()` when `app` is told to stop, before its in-flight requests drain."""
    app.setdefault(ON_STOP_KEY, []).append(callback)


def stop_requested(app: web.Application) -> None:
    """Run the app's stop callbacks (a failing one is logged; the others still run)."""
    for callback in app.get(ON_STOP_KEY, ()):
        try:
            callback()
        except Exception:
            logger.exception("stop callback %r failed", callback)


# CPython collects its youngest generation every 700 allocations; at thousands of requests a second that
# promotes the objects of requests in flight, and the full collections that follow scan every entry of an
# in-memory cache too: the gateway spent ~12% of its time in the collector (bench/gateway.py).
GC_THRESHOLD = (10_000, 10, 10)


def tune_gc() -> None:
    """Freeze what start-up built out of collections and collect young objects less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)


# The supervisor blocks these and takes them with sigwaitinfo: no handler runs at an arbitrary point.
_SUPERVISOR_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGCHLD}
# How long the supervisor waits past drain_timeout before it kills workers that do not exit.
_KILL_GRACE = 30.0


@asynccontextmanager
async def running(
    app: web.Application,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    drain_timeout: float = 10.0,
    reuse_port: bool = False,
    unix_path: Path | None = None,
) -> AsyncIterator[tuple[str, int]]:
    """Serve `app` while the block runs and yield the bound (host, port); drain and clean up on exit.

    `unix_path`: also serve it on that Unix socket (a worker's, for the other workers of its server)."""
    # access_log=None: llmkit's middleware writes the access log, aiohttp's would duplicate it.
    from llmkit.core.connections import GuardedAppRunner
    from llmkit.core.http import cancels_on_disconnect, server_settings_of
    from llmkit.core.listen import LISTEN_BACKLOG, listening_site

    server = server_settings_of(app)
    runner = GuardedAppRunner(
        app,
        head_timeout=server.header_timeout_s,
        keepalive_timeout=server.keepalive_timeout_s,
        access_log=None,
        shutdown_timeout=drain_timeout,
        handler_cancellation=cancels_on_disconnect(app),
    )
    await runner.setup()
    try:
        site = listening_site(runner, host, port, reuse_port=reuse_port)
        try:
            await site.start()
        except OSError as exc:
            raise ListenError.from_os_error(host, port, exc) from exc
        if unix_path is not None:
            await web.UnixSite(runner, str(unix_path), backlog=LISTEN_BACKLOG).start()
        yield host, int(runner.addresses[0][1])
    finally:
        stop_requested(app)
        # Stops accepting, lets in-flight handlers finish up to drain_timeout, then runs cleanup contexts.
        await runner.cleanup()


async def _build_app(app_factory: AppFactory) -> web.Application:
    made = app_factory()
    return await made if inspect.isawaitable(made) else made


async def _watch_parent(parent_pid: int, stop: asyncio.Event) -> None:
    # A worker whose supervisor was SIGKILLed would serve forever; it drains instead.
    while os.getppid() == parent_pid:
        await asyncio.sleep(1.0)
    logger.warning("supervisor %d went away; draining", parent_pid)
    stop.set()


async def _serve_until_signal(
    app_factory: AppFactory,
    host: str,
    port: int,
    *,
    drain_timeout: float,
    on_ready: ReadyCallback,
    stop_grace: float = 0.0,
    signals: tuple[signal.Signals, ...] = STOP_SIGNALS,
    reuse_port: bool = False,
    parent_pid: int | None = None,
    unblock: set[int | signal.Signals] | None = None,
    peers: Peers | None = None,
) -> None:
    """Serve until one of `signals` arrives, then drain; a second signal kills at once.

    `peers`: this worker's place among its server's workers (core.workers), which /stats and /metrics
    ask for theirs."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal(sig: signal.Signals) -> None:
        logger.info("%s received; draining in-flight requests (up to %gs)", sig.name, drain_timeout)
        for s in signals:
            loop.remove_signal_handler(s)
            signal.signal(s, signal.SIG_DFL)
        stop.set()

    for s in signals:
        loop.add_signal_handler(s, on_signal, s)
    if unblock is not None:
        # Workers start with stop signals blocked; one sent during startup is handled (drained) now.
        signal.pthread_sigmask(signal.SIG_SETMASK, unblock)
    app = await _build_app(app_factory)
    unix_path = None
    if peers is not None:
        app[PEERS_KEY] = peers
        unix_path = peers.socket(peers.slot)
    async with running(
        app, host, port, drain_timeout=drain_timeout, reuse_port=reuse_port, unix_path=unix_path
    ) as bound:
        watchdog = asyncio.create_task(_watch_parent(parent_pid, stop)) if parent_pid else None
        tune_gc()
        on_ready(*bound)
        await stop.wait()
        if watchdog is not None:
            watchdog.cancel()
        if stop_grace > 0:
            await _stop_grace(app, stop_grace)


async def _stop_grace(app: web.Application, seconds: float) -> None:
    """Keep serving for `seconds` with /health at 503, so a balancer stops sending first (a second signal
    still kills at once)."""
    from llmkit.core.http import SERVICE_KEY

    app[SERVICE_KEY].stopping = True
    logger.info("/health answers 503 draining for %gs before the listener closes", seconds)
    await asyncio.sleep(seconds)


def _run(coro: Coroutine[Any, Any, None]) -> None:
    """Run `coro` on a fresh event loop, uvloop when it is installed."""
    try:
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(coro)


def serve(
    app_factory: AppFactory,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    workers: int = 1,
    drain_timeout: float = 10.0,
    stop_grace: float = 0.0,
    on_ready: ReadyCallback | None = None,
    max_restarts: int = 5,
    restart_window: float = 60.0,
) -> int:
    """Serve until SIGTERM/SIGINT, drain, and return the exit code; a bind failure raises ListenError."""
    ready = on_ready or (lambda _host, _port: None)
    saved = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    try:
        if workers <= 1:
            _run(
                _serve_until_signal(
                    app_factory,
                    host,
                    port,
                    drain_timeout=drain_timeout,
                    on_ready=ready,
                    stop_grace=stop_grace,
                )
            )
            return 0
        if not hasattr(os, "fork") or not hasattr(socket, "SO_REUSEPORT"):
            raise ConfigError("server.workers > 1 needs fork() and SO_REUSEPORT (Linux, macOS); use 1")
        supervisor = _Supervisor(app_factory, host, port, workers, drain_timeout, ready)
        supervisor.stop_grace = stop_grace
        supervisor.max_restarts, supervisor.restart_window = max_restarts, restart_window
        return supervisor.run()
    finally:
        for s, handler in saved.items():
            if handler is not None:
                signal.signal(s, handler)


def _reserve_port(host: str, port: int) -> socket.socket:
    """Bind (never listen) with SO_REUSEPORT so every worker shares the port, free until they bind it."""
    from llmkit.core.listen import bound_socket

    try:
        return bound_socket(host, port, reuse_port=True)
    except OSError as exc:
        raise ListenError.from_os_error(host, port, exc) from exc


def _describe(code: int) -> str:
    return f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"


class _Supervisor:
    """Pre-forks workers on one SO_REUSEPORT port, forwards stop signals, restarts workers that die."""

    def __init__(
        self,
        app_factory: AppFactory,
        host: str,
        port: int,
        workers: int,
        drain_timeout: float,
        on_ready: ReadyCallback,
    ) -> None:
        self.app_factory = app_factory
        self.host, self.port, self.workers = host, port, workers
        self.drain_timeout = drain_timeout
        self.stop_grace = 0.0  # each worker's /health 503 window before it drains
        self.on_ready = on_ready
        # At most max_restarts within restart_window seconds, then the supervisor gives up.
        self.max_restarts, self.restart_window = 5, 60.0
        self.children: set[int] = set()
        self.restarts: collections.deque[float] = collections.deque()
        self.failed = False
        self.old_mask: set[int | signal.Signals] = set()
        self.reserved: socket.socket | None = None
        # Where the workers' Unix sockets live (0700), and each worker's slot in it, kept on a restart.
        self.folder: Path | None = None
        self.slots: dict[int, int] = {}

    def run(self) -> int:
        """Start the workers, call on_ready once all listen, supervise until stopped; the exit code."""
        self.old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _SUPERVISOR_SIGNALS)
        try:
            self.reserved = _reserve_port(self.host, self.port)
            self.port = self.reserved.getsockname()[1]
            self.folder = Path(tempfile.mkdtemp(prefix="llmkit-workers-"))
            try:
                return self._start_and_supervise()
            finally:
                self.reserved.close()
                shutil.rmtree(self.folder, ignore_errors=True)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, self.old_mask)

    def _start_and_supervise(self) -> int:
        read_fd, write_fd = os.pipe()
        try:
            try:
                for slot in range(self.workers):
                    self._spawn(write_fd, read_fd, slot)
            finally:
                os.close(write_fd)
            started = self._wait_ready(read_fd)
        except BaseException:
            self._stop_children()
            raise
        finally:
            os.close(read_fd)
        if started:
            self.on_ready(self.host, self.port)
        else:
            self._stop_children()
        return self._supervise(stopping=not started)

    def _spawn(self, ready_fd: int | None, read_fd: int | None, slot: int) -> int:
        # Buffered output would be written twice, once by each process.
        sys.stdout.flush()
        sys.stderr.flush()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:
            if read_fd is not None:
                os.close(read_fd)
            _worker_main(self, ready_fd, parent, slot)
        self.children.add(pid)
        self.slots[pid] = slot
        return pid

    def _wait_ready(self, read_fd: int) -> bool:
        """Block until every worker listens (True) or a stop signal arrives (False); raise if one fails."""
        ready, buf = 0, b""
        while ready < self.workers:
            info = signal.sigtimedwait(_SUPERVISOR_SIGNALS, 0)
            if info is not None and info.si_signo != signal.SIGCHLD:
                return False
            dead = list(self._reap()) if info is not None else []
            # A dead worker wrote why before it exited: read that first, then blame the exit itself.
            if select.select([read_fd], [], [], 0 if dead else 0.05)[0]:
                chunk = os.read(read_fd, 4096)
                *lines, buf = (buf + chunk).split(b"\n")
                for line in lines:
                    ready += self._ready_or_raise(line.decode())
                if not chunk:
                    raise LlmkitError("workers exited before they listened")
            for pid, code in dead:
                raise LlmkitError(f"worker {pid} exited ({_describe(code)}) before it listened")
        return True

    def _ready_or_raise(self, line: str) -> int:
        """1 for a worker's "ready" line; raise the error a worker reported."""
        kind, _, message = line.partition(" ")
        if kind == "ready":
            return 1
        if kind == "ListenError":
            raise ListenError(self.host, self.port, message)
        if kind == "ConfigError":
            raise ConfigError(message)
        raise LlmkitError(f"a worker failed to start: {kind}: {message}")

    def _supervise(self, stopping: bool) -> int:
        deadline = time.monotonic() + self.drain_timeout + self.stop_grace + _KILL_GRACE
        while self.children:
            if stopping:
                info = signal.sigtimedwait(_SUPERVISOR_SIGNALS, max(0.0, deadline - time.monotonic()))
            else:
                info = signal.sigwaitinfo(_SUPERVISOR_SIGNALS)
            if info is None:
                logger.error(
                    "workers did not exit within %gs; killing them",
                    self.drain_timeout + self.stop_grace + _KILL_GRACE,
                )
                self._signal_children(signal.SIGKILL)
                self.failed = True
                deadline = time.monotonic() + _KILL_GRACE
            elif info.si_signo == signal.SIGCHLD:
                stopping = self._on_child_exit(stopping)
            else:
                # A second signal reaches workers already draining: they exit at once.
                logger.info(
                    "%s received; stopping %d workers", signal.Signals(info.si_signo).name, len(self.children)
                )
                if not stopping:
                    deadline = time.monotonic() + self.drain_timeout + self.stop_grace + _KILL_GRACE
                stopping = True
                self._signal_children(signal.SIGTERM)
            # Workers killed above are reaped on the next SIGCHLD.
        return 1 if self.failed else 0

    def _on_child_exit(self, stopping: bool) -> bool:
        for pid, code in self._reap():
            if stopping:
                self.failed = self.failed or code != 0
                continue
            logger.error("worker %d died unexpectedly (%s)", pid, _describe(code))
            now = time.monotonic()
            while self.restarts and now - self.restarts[0] > self.restart_window:
                self.restarts.popleft()
            if len(self.restarts) >= self.max_restarts:
                logger.error(
                    "%d restarts within %gs; stopping all workers", self.max_restarts, self.restart_window
                )
                self.failed = stopping = True
                self._signal_children(signal.SIGTERM)
                continue
            self.restarts.append(now)
            logger.warning("restarted it as worker %d", self._spawn(None, None, self.slots.pop(pid, 0)))
        return stopping

    def _reap(self) -> Iterator[tuple[int, int]]:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid in self.children:
                self.children.discard(pid)
                yield pid, os.waitstatus_to_exitcode(status)

    def _signal_children(self, sig: signal.Signals) -> None:
        for pid in self.children:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def _stop_children(self) -> None:
        """SIGTERM every worker and wait for all of them."""
        self._signal_children(signal.SIGTERM)
        for pid in list(self.children):
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
            self.children.discard(pid)


def _worker_main(supervisor: _Supervisor, ready_fd: int | None, parent_pid: int, slot: int) -> NoReturn:
    """Body of a forked worker: its own loop and app; reports readiness on `ready_fd`; never returns."""
    code = 1

    def report(line: str) -> None:
        nonlocal ready_fd
        if ready_fd is not None:
            os.write(ready_fd, line.replace("\n", " ").encode() + b"\n")
            os.close(ready_fd)
            ready_fd = None

    try:
        if supervisor.reserved is not None:
            supervisor.reserved.close()
        # Ctrl-C reaches the whole process group; the supervisor turns it into one SIGTERM per worker.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _run(
            _serve_until_signal(
                supervisor.app_factory,
                supervisor.host,
                supervisor.port,
                drain_timeout=supervisor.drain_timeout,
                stop_grace=supervisor.stop_grace,
                on_ready=lambda _h, _p: report(f"ready {os.getpid()}"),
                signals=(signal.SIGTERM,),
                reuse_port=True,
                parent_pid=parent_pid,
                unblock=supervisor.old_mask,
                peers=None
                if supervisor.folder is None
                else Peers(supervisor.folder, slot, supervisor.workers),
            )
        )
        code = 0
    except ListenError as exc:
        report(f"ListenError {exc.reason}")
    except BaseException as exc:
        if not isinstance(exc, LlmkitError):
            # Errors of ours have a message that says it all; anything else is a bug worth a traceback.
            logger.exception("worker %d failed", os.getpid())
        report(f"{type(exc).__name__} {exc}")
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        # _exit: a forked child must not run the parent's atexit hooks or unwind into its stack.
        os._exit(code)
