"""The dashboard's HTTP server: one page, its assets, a JSON snapshot and a live SSE stream.

Read-only by construction: only GET and HEAD are answered (anything else is 405) and no
route changes anything. It binds to loopback unless told otherwise; while it does, requests
whose Host header is not a loopback name are refused, so a web page elsewhere cannot read it
through DNS rebinding. Assets are served from a fixed list, never from a path in the URL.

Routes: `/` (the page), `/static/<asset>`, `/api/snapshot` (the whole state as JSON),
`/events` (server-sent events: an `update` message with the delta since the client's last
one, about four times a second while something changes, and a comment every 15 s
otherwise), `/healthz` (200 while the feed runs, 503 once it has failed).
"""

from __future__ import annotations

import ipaddress
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

import orjson

from consumers.dashboard.state import DashboardState

ASSETS: dict[str, str] = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "chart.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'none'; script-src 'self'; style-src 'self'; "
                                "img-src 'self' data:; connect-src 'self'; font-src 'self'; "
                                "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
UPDATE_INTERVAL_S = 0.25
KEEPALIVE_S = 15.0


def is_loopback(host: str) -> bool:
    """True for names and addresses that only this machine can reach.

    >>> is_loopback("127.0.0.1"), is_loopback("localhost"), is_loopback("0.0.0.0")
    (True, True, False)
    """
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _asset(name: str) -> bytes:
    return (resources.files("consumers.dashboard") / "static" / name).read_bytes()


class DashboardServer(ThreadingHTTPServer):
    """Serves the dashboard of `state`; `health()` says whether the feed is alive."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, host: str, port: int, state: DashboardState, *,
                 title: str = "streamrisk", health: Any = None, max_streams: int = 32) -> None:
        self.state = state
        self.title = title
        self.health = health or (lambda: (True, "ok"))
        self.loopback_only = is_loopback(host)
        self.stopping = threading.Event()
        self.max_streams = max_streams
        self.streams = 0
        self.streams_lock = threading.Lock()
        self.assets = {name: _asset(name) for name in ASSETS}
        super().__init__((host, port), DashboardHandler)

    @property
    def url(self) -> str:
        host, port = str(self.server_address[0]), self.server_address[1]
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}/"

    def shutdown(self) -> None:
        self.stopping.set()  # ends every open event stream at its next tick
        super().shutdown()


class DashboardHandler(BaseHTTPRequestHandler):
    server: DashboardServer
    protocol_version = "HTTP/1.1"
    server_version = "streamrisk-dashboard"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        pass  # access logs would flood the terminal the dashboard was started from

    # --- helpers -------------------------------------------------------------------------

    def _host_allowed(self) -> bool:
        if not self.server.loopback_only:
            return True
        host = self.headers.get("Host", "")
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return is_loopback(name.strip("[]"))

    def _send(self, status: int, body: bytes, content_type: str, *,
              cache: str = "no-store", extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", cache)
        for name, value in {**SECURITY_HEADERS, **(extra or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, payload: Any) -> None:
        self._send(status, orjson.dumps(payload), "application/json")

    def _not_allowed(self) -> None:
        self._send(HTTPStatus.METHOD_NOT_ALLOWED, b"read-only dashboard\n",
                   "text/plain; charset=utf-8", extra={"Allow": "GET, HEAD"})

    do_POST = do_PUT = do_PATCH = do_DELETE = _not_allowed

    def do_OPTIONS(self) -> None:
        self._not_allowed()

    def do_HEAD(self) -> None:
        self.do_GET()

    # --- routes --------------------------------------------------------------------------

    def do_GET(self) -> None:
        if not self._host_allowed():
            self._send(HTTPStatus.MISDIRECTED_REQUEST, b"unknown host\n",
                       "text/plain; charset=utf-8")
            return
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            self._send(HTTPStatus.OK, self.server.assets["index.html"], ASSETS["index.html"])
        elif path.startswith("/static/") and path[len("/static/"):] in ASSETS:
            name = path[len("/static/"):]
            self._send(HTTPStatus.OK, self.server.assets[name], ASSETS[name],
                       cache="no-cache")
        elif path == "/api/snapshot":
            self._json(HTTPStatus.OK, self.server.state.delta(0))
        elif path == "/healthz":
            ok, detail = self.server.health()
            self._json(HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE,
                       {"status": "ok" if ok else "failed", "detail": detail,
                        "seq": self.server.state.seq})
        elif path == "/events":
            self._events()
        else:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")

    def _events(self) -> None:
        server = self.server
        with server.streams_lock:
            if server.streams >= server.max_streams:
                self._send(HTTPStatus.SERVICE_UNAVAILABLE, b"too many open streams\n",
                           "text/plain; charset=utf-8", extra={"Retry-After": "5"})
                return
            server.streams += 1
        try:
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Accel-Buffering", "no")
            for name, value in SECURITY_HEADERS.items():
                self.send_header(name, value)
            self.end_headers()
            if self.command == "HEAD":
                return
            self.close_connection = True  # the stream ends the connection when it ends
            since, first = 0, True
            last_write = 0.0
            self.wfile.write(b"retry: 2000\n\n")
            while not server.stopping.is_set():
                if first or server.state.seq != since:
                    delta = server.state.delta(since)
                    since, first = delta["seq"], False
                    self.wfile.write(b"event: update\ndata: " + orjson.dumps(delta) + b"\n\n")
                    self.wfile.flush()
                    last_write = time.monotonic()
                elif time.monotonic() - last_write >= KEEPALIVE_S:
                    self.wfile.write(b": keepalive\n\n")
                    self.wfile.flush()
                    last_write = time.monotonic()
                server.stopping.wait(UPDATE_INTERVAL_S)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass  # the browser went away
        finally:
            with server.streams_lock:
                server.streams -= 1
