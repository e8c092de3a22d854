"""JSON ``$batch`` for the Microsoft stand-in: at most ``BATCH_MAX`` (20) requests, ``dependsOn``,
and each inner request costed, counted and faulted on its own before it is dispatched."""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sandbox.microsoft.common import BATCH_MAX, GraphError
from sandbox.microsoft.identity import _Token
from sandbox.server import Request, Response


class _Batch:
    """``POST /v1.0/$batch`` (methods of :class:`MicrosoftStandIn`)."""

    def _batch(self, req: Request, p: dict[str, str], token: _Token) -> Response:
        try:
            body = req.json()
        except ValueError:
            raise GraphError(400, "BadRequest", "Invalid batch payload format.") from None
        requests_ = body.get("requests") if isinstance(body, dict) else None
        if not isinstance(requests_, list) or not requests_:
            raise GraphError(400, "BadRequest", "Invalid batch payload format.")
        if len(requests_) > BATCH_MAX:
            raise GraphError(400, "BadRequest", f"Invalid batch payload format. The maximum number of requests in a batch is {BATCH_MAX}.")
        ids: list[str] = []
        for r in requests_:
            if not isinstance(r, dict) or not r.get("id") or not r.get("method") or not r.get("url"):
                raise GraphError(400, "BadRequest", "Invalid batch payload format. Each request needs id, method and url.")
            rid = str(r["id"]).lower()
            if rid in ids:
                raise GraphError(400, "BadRequest", f"Batch request contains duplicate id '{r['id']}'.")
            ids.append(rid)
        for r in requests_:
            for dep in r.get("dependsOn") or []:
                if str(dep).lower() not in ids:
                    raise GraphError(400, "BadRequest", f"Request '{r['id']}' depends on unknown request '{dep}'.")
        status: dict[str, int] = {}
        out = []
        for r in requests_:
            rid = str(r["id"])
            if any(status.get(str(d).lower(), 200) >= 400 for d in r.get("dependsOn") or []):
                inner = self._error(req, GraphError(424, "FailedDependency", "A request this one depends on failed."))
            else:
                inner = self._inner(req, r)
            status[rid.lower()] = inner.status
            headers = {k: v for k, v in inner.headers.items() if k.lower() not in ("content-length", "date", "strict-transport-security")}
            entry: dict[str, Any] = {"id": rid, "status": inner.status, "headers": headers}
            if inner.body:
                try:
                    entry["body"] = json.loads(inner.body)
                except ValueError:
                    entry["body"] = base64.b64encode(inner.body).decode()
            out.append(entry)
        return self._json(req, {"responses": out})

    def _inner(self, outer: Request, r: dict[str, Any]) -> Response:
        url = str(r["url"])
        if url.startswith(("http://", "https://")):
            raise_url = urlsplit(url)
            url = raise_url.path + (f"?{raise_url.query}" if raise_url.query else "")
        if not url.startswith("/"):
            url = "/" + url
        if not url.startswith("/v1.0/"):
            url = "/v1.0" + url
        split = urlsplit(url)
        headers = {"authorization": outer.headers.get("authorization", "")}
        headers.update({str(k).lower(): str(v) for k, v in (r.get("headers") or {}).items()})
        body = r.get("body")
        raw = json.dumps(body).encode() if isinstance(body, (dict, list)) else (str(body).encode() if body else b"")
        inner = Request(method=str(r["method"]).upper(), path=split.path,
                        query=parse_qs(split.query, keep_blank_values=True), headers=headers, body=raw, client=outer.client)
        endpoint = self.endpoint(inner)
        if endpoint == "batch":
            return self._error(inner, GraphError(400, "BadRequest", "Nested batch requests are not supported."))
        units = self.units(inner, endpoint)
        fault = self._apply_faults(inner, endpoint, units)  # each inner request is throttled on its own
        if fault == "drop":
            self.stats.bump("dropped", endpoint)
            return self.error_response(inner, endpoint, 503)
        if isinstance(fault, Response):
            self.stats.bump("throttled" if fault.status == 429 else "errors", endpoint)
            return fault
        self.stats.count(endpoint, units)
        return self.handle(inner)
