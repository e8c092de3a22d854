"""Errors in Google's shapes: the API error envelope and the OAuth token endpoint's errors."""

from __future__ import annotations

from typing import Any

from sandbox.google.discovery import _Method
from sandbox.server import Response


class ApiError(Exception):
    def __init__(self, response: Response):
        super().__init__(response.status)
        self.response = response


def google_error(status: int, message: str, reason: str, domain: str = "global", location: str | None = None,
                 location_type: str | None = None, status_text: str | None = None,
                 headers: dict[str, str] | None = None, details: list[dict[str, Any]] | None = None) -> Response:
    err: dict[str, Any] = {"message": message, "domain": domain, "reason": reason}
    if location:
        err["location"] = location
        err["locationType"] = location_type or "parameter"
    body: dict[str, Any] = {"code": status, "message": message, "errors": [err]}
    if status_text:
        body["status"] = status_text
    if details:
        body["details"] = details
    return Response.json({"error": body}, status, headers)


def _invalid(location: str, message: str = "Invalid Value", status: int = 400, reason: str = "invalid") -> ApiError:
    return ApiError(google_error(status, message, reason, location=location, location_type="parameter"))


def _file_not_found(file_id: str) -> ApiError:
    return ApiError(google_error(404, f"File not found: {file_id}.", "notFound", location="fileId"))


def _drive_not_found(drive_id: str) -> ApiError:
    return ApiError(google_error(404, f"Shared drive not found: {drive_id}", "notFound", location="driveId"))


def _dir_not_found(what: str) -> ApiError:
    return ApiError(google_error(404, f"Resource Not Found: {what}", "notFound"))


def _dir_forbidden() -> ApiError:
    return ApiError(google_error(403, "Not Authorized to access this resource/api", "forbidden"))


def _bad_request(message: str = "Bad Request") -> ApiError:
    return ApiError(google_error(400, message, "badRequest"))


def _auth_error(missing: bool = False) -> Response:
    if missing:
        msg, err, reason = ("Request is missing required authentication credential. Expected OAuth 2 access token, login "
                            "cookie or other valid authentication credential. See "
                            "https://developers.google.com/identity/sign-in/web/devconsole-project."), "Login Required.", "required"
    else:
        msg, err, reason = ("Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie "
                            "or other valid authentication credential. See "
                            "https://developers.google.com/identity/sign-in/web/devconsole-project."), "Invalid Credentials", "authError"
    body = {"error": {"code": 401, "message": msg, "errors": [
        {"message": err, "domain": "global", "reason": reason, "location": "Authorization", "locationType": "header"}],
        "status": "UNAUTHENTICATED"}}
    return Response.json(body, 401, {"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/", error="invalid_token"'})


def _insufficient_scopes(method: _Method) -> Response:
    service = "drive.googleapis.com" if method.api == "drive" else "admin.googleapis.com"
    body = {"error": {
        "code": 403, "message": "Request had insufficient authentication scopes.",
        "errors": [{"message": "Insufficient Permission", "domain": "global", "reason": "insufficientPermissions"}],
        "status": "PERMISSION_DENIED",
        "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "ACCESS_TOKEN_SCOPE_INSUFFICIENT",
                     "domain": "googleapis.com", "metadata": {"service": service, "method": method.endpoint}}],
    }}
    return Response.json(body, 403)


def _oauth_error(status: int, error: str, description: str) -> Response:
    return Response.json({"error": error, "error_description": description}, status)
