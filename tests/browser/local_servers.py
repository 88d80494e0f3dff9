"""A stdlib HTTP server on 127.0.0.1 for the browser tests: a webhook receiver (POST /hook, signatures
checked) and an embeddings upstream that answers 500 while `down`, else forwards to a simulator."""

from __future__ import annotations

import threading
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from llmkit.platform.webhooks.signing import InvalidSignature, verify


@dataclass
class LocalServer:
    """What the server got and how it answers: `secret` verifies webhook POSTs; `down` fails embeddings."""

    simulator: str
    secret: str = ""
    down: bool = True
    hooks: list[tuple[dict[str, str], bytes, bool]] = field(default_factory=list)
    url: str = ""
    _server: ThreadingHTTPServer | None = None

    def start(self) -> LocalServer:
        """Listen on a free port in a thread."""
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path == "/hook":
                    owner.hook(dict(self.headers), body)
                    self._answer(200, b"ok", "text/plain")
                elif self.path == "/v1/embeddings":
                    self._answer(*owner.embeddings(body))
                else:
                    self._answer(404, b"not here", "text/plain")

            def _answer(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def hook(self, headers: dict[str, str], body: bytes) -> None:
        """Record one webhook POST and whether the secret verifies its signature."""
        try:
            verify(self.secret, {k.lower(): v for k, v in headers.items()}, body)
            verified = True
        except InvalidSignature:
            verified = False
        self.hooks.append((headers, body, verified))

    def embeddings(self, body: bytes) -> tuple[int, bytes, str]:
        """500 while down, else the simulator's answer."""
        if self.down:
            return 500, b'{"error": {"message": "embedding model crashed"}}', "application/json"
        request = urllib.request.Request(
            f"{self.simulator}/v1/embeddings", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as got:
            return got.status, got.read(), "application/json"

    def close(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
