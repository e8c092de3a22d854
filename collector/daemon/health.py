"""/healthz (JSON) and /metrics (Prometheus text) of the daemon, on 127.0.0.1 only."""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collector.daemon import Daemon

log = logging.getLogger("shoseki.daemon")


class _HealthHandler(BaseHTTPRequestHandler):
    server: "_HealthHTTPServer"

    def do_GET(self) -> None:  # noqa: N802 - the http.server spelling
        path = self.path.split("?", 1)[0]
        status = 200
        try:
            if path == "/healthz":
                body, ctype = json.dumps(self.server.daemon.health(), ensure_ascii=False).encode(), "application/json"
            elif path == "/metrics":
                body, ctype = self.server.daemon.metrics().encode(), "text/plain; version=0.0.4; charset=utf-8"
            else:
                status, body, ctype = 404, b"not found: try /healthz or /metrics\n", "text/plain; charset=utf-8"
        except Exception as exc:
            log.warning("health endpoint %s failed: %s: %s", path, type(exc).__name__, exc)
            status, body, ctype = 500, b"internal error\n", "text/plain; charset=utf-8"
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # requests are not events worth a line
        pass


class _HealthHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    daemon: "Daemon"


class HealthServer:
    """/healthz (JSON) and /metrics (Prometheus text) on 127.0.0.1 only."""

    def __init__(self, daemon: "Daemon", port: int):
        self.server = _HealthHTTPServer(("127.0.0.1", port), _HealthHandler)
        self.server.daemon = daemon
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="shoseki-health", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
