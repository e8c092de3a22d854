"""Answers AWS never gave, injected into a botocore client for the AWS connector tests."""

from __future__ import annotations

from typing import Any

from botocore.awsrequest import AWSResponse

#: the error body of the query protocol (IAM, STS)
QUERY_ERROR = ('<ErrorResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/"><Error><Type>Sender</Type>'
               "<Code>{code}</Code><Message>{message}</Message></Error><RequestId>test</RequestId></ErrorResponse>")
#: the error body of the REST-XML protocol (S3, S3 Control)
REST_ERROR = ('<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
              "<RequestId>test</RequestId></Error>")


class _Body:
    def __init__(self, data: bytes):
        self.data = data

    def stream(self, **_: Any):
        yield self.data


def inject(service: str, operation: str, code: str, status: int, *, times: int = 1, match: str | None = None,
           message: str = "injected by the test"):
    """A ``customize`` hook for ``AwsClients``: answer ``code`` (HTTP ``status``) to the first ``times``
    requests of ``service``'s ``operation`` whose URL or body contains ``match``.

    Registered first on ``before-send`` so it runs before moto's own in-process hook; botocore then
    parses, retries and counts the answer exactly as if AWS had sent it. ``hook.left["n"]`` is how
    many answers are still to give.
    """
    left = {"n": times}

    def customize(client):
        model = client.meta.service_model
        if model.service_name != service:
            return
        body = (REST_ERROR if model.protocol == "rest-xml" else QUERY_ERROR).format(code=code, message=message).encode()

        def hook(request, **_):
            text = request.body.decode() if isinstance(request.body, bytes) else str(request.body or "")
            if left["n"] > 0 and (match is None or match in request.url or match in text):
                left["n"] -= 1
                return AWSResponse(request.url, status, {}, _Body(body))
            return None

        client.meta.events.register_first(f"before-send.{model.service_id.hyphenize()}.{operation}", hook)

    customize.left = left  # type: ignore[attr-defined]
    return customize
