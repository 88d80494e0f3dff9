"""The floor under a paced-stream benchmark: the CPU one small loopback `send()` costs on this machine.

`.venv/bin/python bench/loopback_send.py [--sockets 1000] [--bytes 150] [--seconds 4]` connects that many
TCP sockets over loopback, keeps a reader draining them in a child process (on another core when there is
one), then sends one message to each socket in turn, 1,000 rounds a second at most, and prints the user
and system CPU of the sender per `send()`. On loopback the sender also does the receiver's TCP work, so the
system time is what any server pays per streamed event before its own code runs (bench/simulate.py's
5,000 streams at 50 ms are 100,000 events a second).
"""

from __future__ import annotations

import argparse
import os
import resource
import selectors
import socket
import time


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sockets", type=int, default=1000)
    parser.add_argument("--bytes", type=int, default=150)
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536) if hard > 0 else 65536, hard))
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4096)
        port = listener.getsockname()[1]
        readers, senders = [], []
        for _ in range(args.sockets):
            reader = socket.create_connection(("127.0.0.1", port))
            sender, _ = listener.accept()
            sender.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            reader.setblocking(False)
            readers.append(reader)
            senders.append(sender)
    child = os.fork()
    if child == 0:  # the reader: drain every socket until the sender is done
        selector = selectors.DefaultSelector()
        for reader in readers:
            selector.register(reader, selectors.EVENT_READ)
        end = time.monotonic() + args.seconds + 2
        while time.monotonic() < end:
            for key, _ in selector.select(0.1):
                try:
                    key.fileobj.recv(65536)  # type: ignore[union-attr]
                except BlockingIOError:
                    pass
        os._exit(0)
    message = b"x" * args.bytes
    before, start, sent = resource.getrusage(resource.RUSAGE_SELF), time.monotonic(), 0
    while time.monotonic() - start < args.seconds:
        for sender in senders:
            sender.send(message)
        sent += len(senders)
        time.sleep(0.001)
    after = resource.getrusage(resource.RUSAGE_SELF)
    os.waitpid(child, 0)
    user = (after.ru_utime - before.ru_utime) / sent * 1e6
    system = (after.ru_stime - before.ru_stime) / sent * 1e6
    what = f"{sent:,} sends of {args.bytes} bytes to {args.sockets:,} sockets"
    print(f"{what}: {user:.2f} µs user, {system:.2f} µs system each")
    print(f"100,000 sends a second would take {system * 0.1:.2f} of a core in the kernel alone")


if __name__ == "__main__":
    main()
