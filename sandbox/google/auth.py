"""OAuth2: the service-account key, the JWT bearer grant and its checks, access tokens and scopes."""

from __future__ import annotations

import json
import secrets
import time
from typing import Any
from urllib.parse import parse_qs

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from sandbox.google.common import _b64d, _num, _Token
from sandbox.google.errors import _oauth_error
from sandbox.server import Request, Response

SCOPE = "https://www.googleapis.com/auth/"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
#: Audiences Google's token endpoint accepts in a JWT bearer assertion. google-auth always signs
#: ``aud = https://oauth2.googleapis.com/token`` whatever ``token_uri`` says, so the stand-in accepts
#: these as well as its own ``token_uri``.
TOKEN_AUDIENCES = (
    "https://oauth2.googleapis.com/token",
    "https://www.googleapis.com/oauth2/v4/token",
    "https://accounts.google.com/o/oauth2/token",
)

#: Scopes the service account's domain-wide delegation grants unless told otherwise (apis.md §1.1/§1.2).
DEFAULT_GRANTED_SCOPES = tuple(SCOPE + s for s in (
    "admin.directory.user.readonly",
    "admin.directory.group.readonly",
    "admin.directory.group.member.readonly",
    "admin.directory.rolemanagement.readonly",
    "admin.reports.audit.readonly",
    "drive.metadata.readonly",
    "drive.readonly",
))


class AuthMixin:
    """``POST /token`` and the key it checks assertions against (state set up by ``GoogleStandIn``)."""

    def service_account_info(self) -> dict[str, Any]:
        """The key JSON a client loads with ``service_account.Credentials.from_service_account_info``."""
        if not self.base_url:
            raise RuntimeError("serve the stand-in first (SandboxServer(standin)) so token_uri is known")
        pem = self._key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()).decode()
        return {
            "type": "service_account",
            "project_id": self.project_id,
            "private_key_id": self._kid,
            "private_key": pem,
            "client_email": self.service_account_email,
            "client_id": _num(self.org.seed, "client", digits=21),
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": self.base_url + "/token",
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "client_x509_cert_url": f"https://www.googleapis.com/robot/v1/metadata/x509/{self.service_account_email}",
            "universe_domain": "googleapis.com",
        }

    def expire_tokens(self) -> int:
        """Invalidate every access token issued so far (the next call gets 401); return how many."""
        with self._token_lock:
            n = len(self._tokens)
            self._tokens.clear()
        return n

    @staticmethod
    def _bearer(req: Request) -> str | None:
        h = req.headers.get("authorization")
        if h and h[:7].lower() == "bearer ":
            return h[7:].strip()
        return req.arg("access_token") or req.arg("oauth_token")

    def _token_endpoint(self, req: Request) -> Response:
        if req.method != "POST":
            return _oauth_error(405, "invalid_request", "Method not allowed; POST the grant.")
        form = parse_qs(req.body.decode("utf-8", "replace"))
        grant = (form.get("grant_type") or [""])[-1]
        if grant != JWT_BEARER:
            return _oauth_error(400, "unsupported_grant_type", f"Invalid grant_type: {grant}")
        assertion = (form.get("assertion") or [""])[-1]
        try:
            h64, c64, s64 = assertion.split(".")
            header = json.loads(_b64d(h64))
            claims = json.loads(_b64d(c64))
            signature = _b64d(s64)
        except (ValueError, TypeError):
            return _oauth_error(400, "invalid_grant", "Invalid JWT Signature.")
        if header.get("alg") != "RS256" or header.get("kid") not in (None, self._kid):
            return _oauth_error(400, "invalid_grant", "Invalid JWT Signature.")
        try:
            self._public.verify(signature, f"{h64}.{c64}".encode(), padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            return _oauth_error(400, "invalid_grant", "Invalid JWT Signature.")
        if claims.get("iss") != self.service_account_email:
            return _oauth_error(400, "invalid_grant", "Invalid JWT Signature.")
        if claims.get("aud") not in TOKEN_AUDIENCES + (self.base_url + "/token",):
            return _oauth_error(400, "invalid_grant", "Invalid JWT: Failed audience check. The right audience is "
                                "https://oauth2.googleapis.com/token")
        now = time.time()
        try:
            iat, exp = float(claims["iat"]), float(claims["exp"])
        except (KeyError, TypeError, ValueError):
            iat = exp = -1.0
        if not (iat - 300 <= now <= exp + 300 and 0 < exp - iat <= 3600):
            return _oauth_error(400, "invalid_grant", "Invalid JWT: Token must be a short-lived token (60 minutes) and in a "
                                "reasonable timeframe. Check your iat and exp values in the JWT claim.")
        scopes = frozenset((claims.get("scope") or "").split())
        if not scopes:
            return _oauth_error(400, "invalid_scope", "Empty or missing scope not allowed.")
        sub = claims.get("sub")
        subject: int | None = None
        if sub:
            if not scopes <= self.granted_scopes:
                return _oauth_error(401, "unauthorized_client", "Client is unauthorized to retrieve access tokens using this "
                                    "method, or client not authorized for any of the scopes requested.")
            person = self.org.person_by_email(sub)
            if person is None or (person.suspended and self.suspended_subjects == "refuse"):
                return _oauth_error(400, "invalid_grant", "Invalid email or User ID")
            subject = person.index
        value = "ya29.sandbox-" + secrets.token_urlsafe(48)
        token = _Token(value, subject, sub or self.service_account_email, scopes, time.monotonic() + self.token_ttl_s)
        with self._token_lock:
            if len(self._tokens) > 50_000:
                now_m = time.monotonic()
                for k in [k for k, t in self._tokens.items() if t.expires <= now_m]:
                    del self._tokens[k]
            self._tokens[value] = token
        self.grants.append({"sub": sub, "scopes": sorted(scopes), "iss": claims.get("iss")})
        return Response.json({"access_token": value, "expires_in": self.expires_in, "token_type": "Bearer"})
