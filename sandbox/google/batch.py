"""Multipart batch: ``/batch/drive/v3`` and ``/batch`` (Directory), each inner call dispatched alone."""

from __future__ import annotations

import re
import secrets
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

from sandbox.google.discovery import route
from sandbox.google.errors import google_error
from sandbox.server import Request, Response

DRIVE_BATCH_LIMIT = 100        # "You're limited to 100 calls in a single batch request" (Drive)
DIRECTORY_BATCH_LIMIT = 1000   # "You're limited to 1000 calls in a single batch request" (Directory)


class BatchMixin:
    """``POST`` of a ``multipart/mixed`` body; every part goes through ``StandIn.dispatch``."""

    def _batch(self, req: Request) -> Response | str:
        api = "drive" if req.path == "/batch/drive/v3" else "directory"
        limit = self.drive_batch_limit if api == "drive" else self.directory_batch_limit
        if req.method != "POST":
            return google_error(405, "Method Not Allowed", "badRequest")
        m = re.search(r'boundary="?([^";]+)"?', req.headers.get("content-type", ""))
        if not m or not req.headers.get("content-type", "").lower().startswith("multipart/mixed"):
            return google_error(400, "Batch requests must be multipart/mixed with a boundary.", "badRequest")
        parts = _split_multipart(req.body.decode("utf-8"), m.group(1))
        if len(parts) > limit:
            return google_error(400, f"A batch request cannot contain more than {limit} requests.", "badRequest",
                                status_text="INVALID_ARGUMENT")
        boundary = "batch_" + secrets.token_hex(12)
        out: list[bytes] = []
        for content_id, inner in parts:
            if inner is None:
                resp: Response | str = google_error(400, "Malformed batch part.", "badRequest")
            else:
                found = route(inner.method, inner.path) if not inner.path.startswith(("/_sandbox/", "/batch", "/token")) else None
                if found is None or found[0].api != api:
                    resp = google_error(404, "Not Found", "notFound")
                else:
                    resp = self.dispatch(inner)
            if resp == "drop":
                return "drop"
            assert isinstance(resp, Response)
            head = [f"HTTP/1.1 {resp.status} {HTTPStatus(resp.status).phrase}"]
            headers = {"Content-Type": "application/json; charset=UTF-8", **resp.headers, "Content-Length": str(len(resp.body))}
            head += [f"{k}: {v}" for k, v in headers.items()]
            cid = f"<response-{content_id[1:-1]}>" if content_id.startswith("<") else f"<response-{content_id}>"
            out.append(
                f"--{boundary}\r\nContent-Type: application/http\r\nContent-ID: {cid}\r\n\r\n".encode()
                + ("\r\n".join(head) + "\r\n\r\n").encode() + resp.body + b"\r\n"
            )
        out.append(f"--{boundary}--\r\n".encode())
        return Response(200, b"".join(out), {"Content-Type": f"multipart/mixed; boundary={boundary}"})


_BLANK = re.compile(r"\r?\n\r?\n")


def _split_multipart(body: str, boundary: str) -> list[tuple[str, Request | None]]:
    """The parts of a batch body: ``(Content-ID, inner request or None if malformed)``."""
    parts: list[tuple[str, Request | None]] = []
    chunks = body.split("--" + boundary)
    for chunk in chunks[1:]:
        if chunk.startswith("--"):
            break
        chunk = chunk[2:] if chunk.startswith("\r\n") else chunk.removeprefix("\n")
        if chunk.endswith("\r\n"):
            chunk = chunk[:-2]
        elif chunk.endswith("\n"):
            chunk = chunk[:-1]
        pieces = _BLANK.split(chunk, 1)
        part_headers = pieces[0]
        content_id = ""
        for line in part_headers.splitlines():
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-id":
                content_id = value.strip()
        if len(pieces) < 2:
            parts.append((content_id, None))
            continue
        inner = _BLANK.split(pieces[1], 1)
        lines = inner[0].splitlines()
        try:
            method, target, _version = lines[0].split(" ", 2)
        except (IndexError, ValueError):
            parts.append((content_id, None))
            continue
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name:
                headers[name.strip().lower()] = value.strip()
        split = urlsplit(target)
        parts.append((content_id, Request(
            method=method.upper(), path=split.path, query=parse_qs(split.query, keep_blank_values=True),
            headers=headers, body=(inner[1].encode() if len(inner) > 1 else b""),
        )))
    return parts
