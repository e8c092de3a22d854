"""Identity for the Microsoft stand-in: the TLS material and the app's certificate credential,
:class:`AppInfo`, access tokens, and the Entra authority (OpenID configuration, keys) and
``oauth2/v2.0/token`` endpoints (client secret or certificate ``client_assertion``)."""

from __future__ import annotations

import base64
import hmac
import ipaddress
import json
import secrets
import ssl
import tempfile
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from sandbox.microsoft.common import (
    ASSERTION_TYPE,
    GRAPH_APP_ID,
    GRAPH_SCOPE,
    PERMS_AUDIT,
    GraphError,
    TokenError,
    _b64u,
    _b64u_dec,
    make_session,
)
from sandbox.server import Request, Response

# -- certificates ------------------------------------------------------------------------------------


def _tls_material() -> tuple[bytes, bytes, bytes]:
    """``(ca_pem, leaf_cert_pem, leaf_key_pem)``: a throwaway CA and a server certificate for
    IP:127.0.0.1 and DNS:localhost, generated now (nothing is ever stored in the repository)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "shoseki sandbox Microsoft CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                    x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=True, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return (
        ca.public_bytes(pem),
        leaf.public_bytes(pem),
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )


def _app_certificate(common_name: str) -> tuple[str, str, Any]:
    """``(certificate_pem, private_key_pem, certificate)`` for the app's certificate credential."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    now = datetime.now(UTC)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=365)).sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return cert_pem, key_pem, cert


@dataclass(frozen=True)
class AppInfo:
    """The one application registered in the stand-in's tenant (secrets generated at start)."""

    client_id: str
    tenant_id: str
    tenant_domain: str               # the initial domain, ``<name>.onmicrosoft.com``
    client_secret: str
    certificate_pem: str
    private_key_pem: str
    thumbprint: str                  # SHA-1 hex of the certificate (msal ``thumbprint``)
    thumbprint_sha256: str
    authority: str                   # ``https://127.0.0.1:<port>/<tenant id>``
    token_endpoint: str
    graph_url: str                   # ``https://127.0.0.1:<port>/v1.0``
    roles: tuple[str, ...]


@dataclass
class _Token:
    client_id: str
    expires: float
    roles: frozenset[str]


class _Identity:
    """TLS, the app registration, tokens and the identity endpoints (methods of :class:`MicrosoftStandIn`)."""

    # -- public helpers ----------------------------------------------------------------------------
    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        with tempfile.TemporaryDirectory(prefix="shoseki-ms-tls-") as tmp:
            cert, key = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
            cert.write_bytes(self._leaf_pem + self._ca_pem)
            key.touch(mode=0o600)
            key.write_bytes(self._leaf_key)
            ctx.load_cert_chain(cert, key)
        return ctx

    @property
    def authority(self) -> str:
        return f"{self.base_url}/{self.tenant_id}"

    @property
    def token_endpoint(self) -> str:
        return f"{self.base_url}/{self.tenant_id}/oauth2/v2.0/token"

    @property
    def graph_url(self) -> str:
        return f"{self.base_url}/v1.0"

    def app_info(self) -> AppInfo:
        return AppInfo(
            client_id=self.client_id, tenant_id=self.tenant_id, tenant_domain=self.tenant_domain,
            client_secret=self.client_secret, certificate_pem=self.certificate_pem,
            private_key_pem=self.private_key_pem, thumbprint=self._cert_sha1.hex().upper(),
            thumbprint_sha256=self._cert_sha256.hex().upper(), authority=self.authority,
            token_endpoint=self.token_endpoint, graph_url=self.graph_url, roles=tuple(sorted(self.app_roles)),
        )

    def session(self) -> Any:
        return make_session(self.ca_file)

    def expire_tokens(self) -> int:
        """Expire every access token issued so far (the next Graph call gets 401)."""
        with self._token_lock:
            for t in self._tokens.values():
                t.expires = 0.0
            return len(self._tokens)

    def set_app_roles(self, roles: Iterable[str]) -> None:
        """Change the app's granted permissions; like Entra, only tokens issued afterwards carry them."""
        self.app_roles = frozenset(roles)

    # -- access tokens on Graph calls --------------------------------------------------------------
    @staticmethod
    def _bearer(req: Request) -> str | None:
        auth = req.headers.get("authorization", "")
        if auth[:7].lower() == "bearer ":
            return auth[7:].strip()
        return None

    def _authenticate(self, req: Request) -> _Token:
        www = {"WWW-Authenticate": f'Bearer realm="", authorization_uri="{self.authority}/oauth2/authorize", client_id="{GRAPH_APP_ID}"'}
        raw = self._bearer(req)
        if not raw:
            raise GraphError(401, "InvalidAuthenticationToken", "Access token is empty.", www)
        with self._token_lock:
            tok = self._tokens.get(raw)
        if tok is None:
            raise GraphError(401, "InvalidAuthenticationToken", "CompactToken parsing failed with error code: 80049217", www)
        if tok.expires <= time.time():
            raise GraphError(401, "InvalidAuthenticationToken", "Access token has expired or is not yet valid.", www)
        return tok

    @staticmethod
    def _require(token: _Token, accepted: tuple[str, ...], sharepoint: bool = False) -> None:
        if token.roles.isdisjoint(accepted):
            if sharepoint:
                raise GraphError(403, "accessDenied", "Either scp or roles claim need to be present in the token.")
            raise GraphError(403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation.")

    def _require_audit(self, token: _Token) -> None:
        if token.roles.isdisjoint(PERMS_AUDIT):
            raise GraphError(403, "Authentication_MSGraphPermissionMissing",
                             "Calling principal does not have required MSGraph permissions AuditLog.Read.All")
        if not self.premium:
            raise GraphError(403, "Authentication_RequestFromNonPremiumTenantOrB2CTenant",
                             "Neither tenant is B2C or tenant doesn't have premium license")

    # -- identity endpoints ------------------------------------------------------------------------
    def _tenant_ok(self, tenant: str) -> bool:
        return tenant.lower() in (self.tenant_id, self.tenant_domain, self.org.domain, "organizations")

    def _openid(self, req: Request, p: dict[str, str]) -> Response:
        if not self._tenant_ok(p["tenant"]):
            return self._token_error(TokenError(400, "invalid_tenant", 90002, f"Tenant '{p['tenant']}' not found."))
        base = f"{self.base_url}/{self.tenant_id}"
        return Response.json({
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "jwks_uri": f"{self.base_url}/{self.tenant_id}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{base}/v2.0",
            "request_uri_parameter_supported": False,
            "userinfo_endpoint": f"{self.base_url}/oidc/userinfo",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "http_logout_supported": True, "frontchannel_logout_supported": True,
            "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nbf", "tid", "roles"],
            "tenant_region_scope": "AS", "cloud_instance_name": "microsoftonline.com",
            "cloud_graph_host_name": "graph.windows.net", "msgraph_host": "graph.microsoft.com",
        })

    def _keys(self, req: Request, p: dict[str, str]) -> Response:
        return Response.json({"keys": []})  # access tokens are opaque here; nobody validates them locally

    def _token_error(self, err: TokenError, retry_after: float | None = None) -> Response:
        now = datetime.now(UTC)
        trace, corr = str(uuid.uuid4()), str(uuid.uuid4())
        desc = (f"AADSTS{err.aadsts}: {err.description} Trace ID: {trace} Correlation ID: {corr} "
                f"Timestamp: {now.strftime('%Y-%m-%d %H:%M:%SZ')}")
        headers = {"Retry-After": str(int(retry_after))} if retry_after else {}
        return Response.json({
            "error": err.error, "error_description": desc, "error_codes": [err.aadsts],
            "timestamp": now.strftime("%Y-%m-%d %H:%M:%SZ"), "trace_id": trace, "correlation_id": corr,
            "error_uri": f"{self.base_url}/error?code={err.aadsts}",
        }, err.status, headers)

    def _token(self, req: Request, p: dict[str, str]) -> Response:
        try:
            return self._issue(req, p)
        except TokenError as err:
            return self._token_error(err)

    def _issue(self, req: Request, p: dict[str, str]) -> Response:
        if not self._tenant_ok(p["tenant"]):
            raise TokenError(400, "invalid_request", 90002, f"Tenant '{p['tenant']}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud.")
        ctype = req.headers.get("content-type", "")
        if "application/x-www-form-urlencoded" not in ctype:
            raise TokenError(400, "invalid_request", 900144, "The request body must contain the following parameter: 'grant_type'.")
        form = {k: v[-1] for k, v in parse_qs(req.body.decode("utf-8", "replace"), keep_blank_values=True).items()}
        basic = req.headers.get("authorization", "")
        if basic[:6].lower() == "basic ":
            try:
                cid, _, sec = base64.b64decode(basic[6:]).decode().partition(":")
                form.setdefault("client_id", cid)
                form.setdefault("client_secret", sec)
            except (ValueError, UnicodeDecodeError):
                pass
        grant = form.get("grant_type")
        if not grant:
            raise TokenError(400, "invalid_request", 900144, "The request body must contain the following parameter: 'grant_type'.")
        if grant != "client_credentials":
            raise TokenError(400, "unsupported_grant_type", 70003, f"The app requested an unsupported grant type '{grant}'.")
        client_id = form.get("client_id", "")
        if not client_id:
            raise TokenError(400, "invalid_request", 900144, "The request body must contain the following parameter: 'client_id'.")
        if client_id != self.client_id:
            raise TokenError(400, "unauthorized_client", 700016,
                             f"Application with identifier '{client_id}' was not found in the directory '{self.tenant_domain}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant.")
        scope = form.get("scope", "")
        scopes = scope.split()
        if not scopes:
            raise TokenError(400, "invalid_request", 900144, "The request body must contain the following parameter: 'scope'.")
        if scopes != [GRAPH_SCOPE]:
            raise TokenError(400, "invalid_scope", 1002012,
                             f"The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).")
        if "client_assertion" in form:
            if form.get("client_assertion_type") != ASSERTION_TYPE:
                raise TokenError(400, "invalid_request", 50027, "Invalid client_assertion_type.")
            self._verify_assertion(form["client_assertion"])
        elif "client_secret" in form:
            if not hmac.compare_digest(form["client_secret"].encode(), self.client_secret.encode()):
                raise TokenError(401, "invalid_client", 7000215,
                                 f"Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{self.client_id}'.")
        else:
            raise TokenError(401, "invalid_client", 7000218,
                             "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.")
        access = secrets.token_urlsafe(48)
        with self._token_lock:
            self._tokens[access] = _Token(client_id, time.time() + self.token_ttl_s, self.app_roles)
        ttl = int(self.token_ttl_s)
        return Response.json({"token_type": "Bearer", "expires_in": ttl, "ext_expires_in": ttl, "access_token": access},
                             headers={"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"})

    def _verify_assertion(self, assertion: str) -> None:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        parts = assertion.split(".")
        try:
            if len(parts) != 3:
                raise ValueError
            header = json.loads(_b64u_dec(parts[0]))
            claims = json.loads(_b64u_dec(parts[1]))
            signature = _b64u_dec(parts[2])
        except (ValueError, UnicodeDecodeError):
            raise TokenError(401, "invalid_client", 50027, "JWT token is invalid or malformed.") from None
        alg = header.get("alg")
        if alg == "RS256":
            if str(header.get("x5t", "")).rstrip("=") != _b64u(self._cert_sha1):
                raise TokenError(401, "invalid_client", 700027,
                                 f"The certificate with identifier used to sign the client assertion is not registered on application. [Reason - The key was not found., Thumbprint of key used by client: '{header.get('x5t')}']")
            pad: Any = padding.PKCS1v15()
        elif alg == "PS256":
            if str(header.get("x5t#S256", "")).rstrip("=") != _b64u(self._cert_sha256):
                raise TokenError(401, "invalid_client", 700027,
                                 "The certificate with identifier used to sign the client assertion is not registered on application. [Reason - The key was not found.]")
            pad = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.AUTO)
        else:
            raise TokenError(401, "invalid_client", 5002738, f"Invalid JWT token. '{alg}' is not a supported signature algorithm.")
        try:
            self._app_cert.public_key().verify(signature, f"{parts[0]}.{parts[1]}".encode(), pad, hashes.SHA256())
        except InvalidSignature:
            raise TokenError(401, "invalid_client", 700027, "Client assertion contains an invalid signature.") from None
        now = time.time()
        valid_aud = {self.token_endpoint, f"{self.base_url}/{self.tenant_domain}/oauth2/v2.0/token", f"{self.authority}/v2.0"}
        if claims.get("aud") not in valid_aud:
            raise TokenError(401, "invalid_client", 700212, f"Invalid audience '{claims.get('aud')}' in client assertion; expected the token endpoint.")
        if claims.get("iss") != self.client_id or claims.get("sub") != self.client_id:
            raise TokenError(401, "invalid_client", 700021, "Client assertion application identifier doesn't match 'client_id' parameter.")
        exp, nbf = claims.get("exp"), claims.get("nbf", claims.get("iat", 0))
        if not isinstance(exp, (int, float)) or exp <= now or (isinstance(nbf, (int, float)) and nbf > now + 300):
            raise TokenError(401, "invalid_client", 700024, "Client assertion is not within its valid time range.")
