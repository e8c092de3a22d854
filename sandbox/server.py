"""The HTTP machinery every stand-in shares: serving, fault injection, quotas, counters, admin.

A stand-in subclasses :class:`StandIn` and implements :meth:`StandIn.handle` (plus the provider's
error shapes); this module does the rest:

* one :class:`ThreadingHTTPServer` per stand-in on 127.0.0.1, HTTP/1.1 keep-alive, optional TLS;
  ``TCP_NODELAY`` on every accepted socket and every response sent in **one** write (apis.md,
  "A trap for any local stand-in server": otherwise Nagle + delayed ACK adds ~40 ms a call);
* fault injection per endpoint or globally (:class:`FaultRule`): latency with jitter, a quota
  window (requests or resource units → the provider's throttling response with ``Retry-After``),
  a 5xx rate, dropped connections, token expiry;
* counters of calls and units per endpoint (:class:`Stats`);
* admin paths under ``/_sandbox/``: ``GET stats``, ``POST reset``, ``POST faults``, ``POST mutate``.

Randomness in faults comes from a seeded generator, so a fault test fails the same way twice.
"""

from __future__ import annotations

import json
import random
from abc import ABC, abstractmethod
import socket
import ssl
import threading
import time
from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]          # lower-case names
    body: bytes
    client: str = ""

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else default

    def json(self) -> Any:
        return json.loads(self.body or b"null")


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> "Response":
        return cls(status, json.dumps(obj, ensure_ascii=False).encode(), {"Content-Type": "application/json; charset=UTF-8", **(headers or {})})


@dataclass
class FaultRule:
    """Faults for one endpoint (``endpoint`` a name from :meth:`StandIn.endpoint`, or ``*``)."""

    endpoint: str = "*"
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    quota: float | None = None           # requests (or units, see ``quota_units``) per window
    quota_window_s: float = 60.0
    quota_units: bool = False            # count resource units instead of requests
    quota_per: str = "endpoint"          # endpoint | global | principal (the caller's identity)
    error_rate: float = 0.0              # share of calls answered with 503
    error_status: int = 503
    drop_rate: float = 0.0               # share of calls whose connection is closed unanswered
    fail_next: int = 0                   # the next N calls fail with ``error_status`` (deterministic)
    throttle_next: int = 0               # the next N calls get the throttling response
    retry_after_s: float | None = None   # Retry-After to send (default: until the window frees)


class Stats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: Counter[str] = Counter()
        self.units: Counter[str] = Counter()
        self.throttled: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()

    def count(self, endpoint: str, units: float) -> None:
        with self._lock:
            self.calls[endpoint] += 1
            self.units[endpoint] += units

    def bump(self, counter: str, endpoint: str) -> None:
        with self._lock:
            getattr(self, counter)[endpoint] += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "calls": dict(self.calls), "units": dict(self.units), "throttled": dict(self.throttled),
                "errors": dict(self.errors), "dropped": dict(self.dropped),
                "total_calls": sum(self.calls.values()), "total_units": sum(self.units.values()),
            }

    def reset(self) -> None:
        with self._lock:
            for c in (self.calls, self.units, self.throttled, self.errors, self.dropped):
                c.clear()


class _Window:
    """A sliding window of (time, amount) spent against one quota."""

    def __init__(self) -> None:
        self.spent: deque[tuple[float, float]] = deque()
        self.total = 0.0

    def try_spend(self, amount: float, limit: float, window: float, now: float) -> float:
        """Spend and return 0, or return the seconds until ``amount`` fits."""
        while self.spent and self.spent[0][0] <= now - window:
            self.total -= self.spent.popleft()[1]
        if self.total + amount <= limit:
            self.spent.append((now, amount))
            self.total += amount
            return 0.0
        freed, wait = self.total + amount - limit, 0.0
        for t, a in self.spent:
            freed -= a
            wait = t + window - now
            if freed <= 0:
                break
        return max(wait, 0.001)


class StandIn(ABC):
    """Base of the Google, Microsoft stand-ins. Subclasses override the marked methods."""

    name = "standin"

    def __init__(self, org, *, seed: int = 0):
        self.org = org
        self.stats = Stats()
        self.rules: list[FaultRule] = []
        self._windows: dict[tuple[str, str], _Window] = {}
        self._fault_lock = threading.Lock()
        self._random = random.Random(seed)
        self.base_url = ""                 # set by serve()

    # -- to override ----------------------------------------------------------------------
    def endpoint(self, req: Request) -> str:
        """A stable name for counters and fault rules, e.g. ``drive.files.list``."""
        return f"{req.method} {req.path}"

    def units(self, req: Request, endpoint: str) -> float:
        return 1.0

    def principal(self, req: Request) -> str:
        """Who is calling (for per-user quotas); default: the bearer token."""
        return req.headers.get("authorization", "")

    def rule_applies(self, rule: FaultRule, endpoint: str) -> bool:
        """Whether a fault rule covers an endpoint (``*`` covers all, unless a stand-in says not)."""
        return rule.endpoint in ("*", endpoint)

    def throttle_response(self, req: Request, endpoint: str, retry_after: float) -> Response:
        return Response.json({"error": {"code": 429, "message": "Too Many Requests"}}, 429, {"Retry-After": str(max(1, round(retry_after)))})

    def error_response(self, req: Request, endpoint: str, status: int) -> Response:
        return Response.json({"error": {"code": status, "message": "Service Unavailable"}}, status)

    @abstractmethod
    def handle(self, req: Request) -> Response:
        """Serve one request (faults and counting already done)."""

    def mutate(self, op: str, args: dict[str, Any]) -> Any:
        """``POST /_sandbox/mutate {"op": …, "args": {…}}``: the organisation's mutations."""
        fn = {
            "share": lambda a: self.org.share(a["file_id"], _share(a["share"])),
            "unshare": lambda a: self.org.unshare(a["file_id"], a["share_id"]),
            "delete_file": lambda a: self.org.delete_file(a["file_id"]),
            "set_person": lambda a: self.org.set_person(int(a["index"]), **a["fields"]),
            "add_member": lambda a: self.org.add_member(a["group"], a["email"]),
            "remove_member": lambda a: self.org.remove_member(a["group"], a["email"]),
        }.get(op)
        if fn is None:
            raise KeyError(f"unknown mutation {op!r}")
        return fn(args)

    # -- faults ---------------------------------------------------------------------------
    def set_faults(self, rules: list[FaultRule]) -> None:
        with self._fault_lock:
            self.rules = list(rules)
            self._windows.clear()

    def _apply_faults(self, req: Request, endpoint: str, units: float) -> Response | str | None:
        """A fault response, ``"drop"``, or None to serve normally. Sleeps for latency."""
        delay = 0.0
        outcome: Response | str | None = None
        with self._fault_lock:
            for rule in self.rules:
                if not self.rule_applies(rule, endpoint):
                    continue
                delay += rule.latency_ms / 1000 + (self._random.random() * rule.jitter_ms / 1000 if rule.jitter_ms else 0)
                if outcome is not None:
                    continue
                if rule.drop_rate and self._random.random() < rule.drop_rate:
                    outcome = "drop"
                elif rule.fail_next > 0:
                    rule.fail_next -= 1
                    outcome = self.error_response(req, endpoint, rule.error_status)
                elif rule.throttle_next > 0:
                    rule.throttle_next -= 1
                    outcome = self.throttle_response(req, endpoint, rule.retry_after_s or 1.0)
                elif rule.error_rate and self._random.random() < rule.error_rate:
                    outcome = self.error_response(req, endpoint, rule.error_status)
                elif rule.quota is not None:
                    key = {"global": "*", "principal": self.principal(req)}.get(rule.quota_per, endpoint)
                    window = self._windows.setdefault((f"{id(rule)}", key), _Window())
                    wait = window.try_spend(units if rule.quota_units else 1.0, rule.quota, rule.quota_window_s, time.monotonic())
                    if wait:
                        outcome = self.throttle_response(req, endpoint, rule.retry_after_s or wait)
        if delay:
            time.sleep(delay)
        return outcome

    # -- the dispatcher the handler calls ---------------------------------------------------
    def dispatch(self, req: Request) -> Response | str:
        if req.path.startswith("/_sandbox/"):
            return self._admin(req)
        endpoint = self.endpoint(req)
        units = self.units(req, endpoint)
        fault = self._apply_faults(req, endpoint, units)
        if fault == "drop":
            self.stats.bump("dropped", endpoint)
            return "drop"
        if isinstance(fault, Response):
            self.stats.bump("throttled" if fault.status in (429,) or b"RateLimitExceeded" in fault.body or b"rateLimitExceeded" in fault.body else "errors", endpoint)
            return fault
        self.stats.count(endpoint, units)
        return self.handle(req)

    def _admin(self, req: Request) -> Response:
        action = req.path[len("/_sandbox/"):]
        if action == "stats" and req.method == "GET":
            return Response.json(self.stats.snapshot())
        if action == "reset" and req.method == "POST":
            self.stats.reset()
            self.set_faults([])
            return Response.json({"ok": True})
        if action == "faults" and req.method == "POST":
            rules = [FaultRule(**r) for r in (req.json() or [])]
            self.set_faults(rules)
            return Response.json({"rules": [asdict(r) for r in rules]})
        if action == "faults" and req.method == "GET":
            return Response.json({"rules": [asdict(r) for r in self.rules]})
        if action == "mutate" and req.method == "POST":
            body = req.json()
            try:
                seq = self.mutate(body["op"], body.get("args", {}))
            except (KeyError, ValueError, TypeError) as exc:
                return Response.json({"error": str(exc)}, 400)
            return Response.json({"change": seq})
        return Response.json({"error": f"unknown admin path {req.path}"}, 404)


def _share(obj: dict[str, Any]):
    from datetime import datetime

    from sandbox.org import Share

    obj = dict(obj)
    if obj.get("expiration"):
        obj["expiration"] = datetime.fromisoformat(obj["expiration"].replace("Z", "+00:00"))
    return Share(**obj)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "SandboxServer"

    def setup(self) -> None:
        super().setup()
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read counters instead
        pass

    def _serve(self) -> None:
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        req = Request(
            method=self.command, path=split.path, query=parse_qs(split.query, keep_blank_values=True),
            headers={k.lower(): v for k, v in self.headers.items()}, body=body, client=self.client_address[0],
        )
        try:
            resp = self.server.standin.dispatch(req)
        except Exception as exc:  # a stand-in bug must show as a 500 with the reason, not hang the client
            import traceback

            traceback.print_exc()
            resp = Response.json({"error": {"code": 500, "message": f"sandbox error: {type(exc).__name__}: {exc}"}}, 500)
        if resp == "drop":
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        assert isinstance(resp, Response)
        head = [f"HTTP/1.1 {resp.status} {self.responses.get(resp.status, ('',))[0]}"]
        headers = {"Content-Length": str(len(resp.body)), "Date": self.date_time_string(), **resp.headers}
        head += [f"{k}: {v}" for k, v in headers.items()]
        self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + resp.body)
        self.wfile.flush()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve


class SandboxServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, standin: StandIn, host: str = "127.0.0.1", port: int = 0, tls: ssl.SSLContext | None = None):
        if not host.startswith("127.") and host not in ("localhost", "::1"):
            raise ValueError("the sandbox only listens on the loopback interface")
        super().__init__((host, port), _Handler)
        self.standin = standin
        self.tls = tls
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://{host}:{self.server_address[1]}"
        standin.base_url = self.url
        self._thread: threading.Thread | None = None

    def get_request(self):
        sock, addr = super().get_request()
        if self.tls is not None:
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def start(self) -> "SandboxServer":
        self._thread = threading.Thread(target=self.serve_forever, name=f"sandbox-{self.standin.name}", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self.shutdown()
        self.server_close()

    def __enter__(self) -> "SandboxServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

