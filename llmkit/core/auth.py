"""Who is calling: one function turns a request into an identity; each route declares the scope it needs.

Every llmkit server's routes are registered through `core.http.add_route(..., scope=...)`, whose wrapper
calls `Guard.check` before the handler: the one place credentials are read, compared and refused.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from aiohttp import hdrs, web
from multidict import istr

from llmkit.errors import ConfigError, LlmkitError

# Route scopes. PUBLIC: nobody needs a credential (/health). ANY: any valid key when keys are required
# (/stats, /metrics, /openapi.json). The others name what a key must hold.
PUBLIC = "public"
ANY = "any"
CHAT, SEARCH, ADMIN = "chat", "search", "admin"
KEY_SCOPES = (CHAT, SEARCH, ADMIN)
DEFAULT_TENANT = "default"

# Pre-folded header names: multidict skips case-folding them on every lookup.
_API_KEY = istr("X-API-Key")
_AZURE_KEY = istr("api-key")
_AUTHORIZATION = istr(hdrs.AUTHORIZATION)
_FETCH_SITE = istr("Sec-Fetch-Site")
_ORIGIN = istr(hdrs.ORIGIN)
_CONTENT_TYPE = istr(hdrs.CONTENT_TYPE)
_MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# The body types a browser may send cross-site without a CORS preflight (an HTML form, fetch no-cors).
_SIMPLE_TYPES = frozenset({"text/plain", "application/x-www-form-urlencoded", "multipart/form-data"})


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a request comes from: a key (or the admin key, or nobody), its tenant and what it may do."""

    key_id: str | None
    tenant_id: str = DEFAULT_TENANT
    scopes: frozenset[str] = field(default_factory=frozenset)
    # True for the bootstrap admin key and admin keys of no tenant: they administer every tenant.
    platform_admin: bool = False

    @property
    def anonymous(self) -> bool:
        """No credential was presented (allowed while keys are not required)."""
        return self.key_id is None


ANONYMOUS = Identity(None)
BOOTSTRAP_ADMIN = Identity("admin", DEFAULT_TENANT, frozenset(KEY_SCOPES), platform_admin=True)


class AuthError(LlmkitError):
    """A request without the credential its route needs: 401 (none, unknown) or 403 (revoked, scope)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class Verifier(Protocol):
    """Turns a presented API key into an identity, or raises AuthError."""

    def recognizes(self, credential: str) -> bool:
        """Whether the credential is in this verifier's format (an `llk_` key), so it must be valid."""
        ...

    async def identify(self, credential: str) -> Identity: ...

    def known(self, credential: str) -> Identity | None:
        """The identity of a credential it verified lately (without awaiting), else None."""
        ...


def credential_of(headers: Mapping[str, str]) -> str | None:
    """The key a request presents: `Authorization: Bearer`, `X-API-Key` (the seed's) or `api-key`."""
    auth = headers.get(_AUTHORIZATION)
    if auth is not None:
        if auth.startswith("Bearer ") and auth[-1:] > " " and auth[7:8] > " ":
            return auth[7:]  # the usual form, already clean
        scheme, _, token = auth.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return headers.get(_API_KEY) or headers.get(_AZURE_KEY) or None


def digest(secret: str) -> bytes:
    """A fixed-length digest, so comparing two secrets takes the same time whatever their lengths."""
    return hashlib.sha256(secret.encode()).digest()


def is_loopback(host: str) -> bool:
    """Whether a bind address is reachable only from this machine."""
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def refuse_open_bind(host: str, admin_configured: bool, setting: str, env: str) -> None:
    """Exit 2 (ConfigError) rather than serve beyond loopback with no admin credential."""
    if not admin_configured and not is_loopback(host):
        raise ConfigError(
            f"refusing to listen on {host} without an admin credential: anyone who can reach it could "
            f"administer it; set {setting} (env {env}) or bind 127.0.0.1"
        )


def cross_site_refusal(request: web.Request, forms: bool = False) -> AuthError | None:
    """What a browser could send from another site with no credential: an Origin / Sec-Fetch-Site that
    is not this server, or (unless the route takes `forms`) a form-like body. Such a request is refused."""
    headers = request.headers
    site = headers.get(_FETCH_SITE)
    if site is not None and site not in ("same-origin", "none"):
        return AuthError(403, "cross_site_request", f"cross-site {request.method} refused; send an API key")
    origin = headers.get(_ORIGIN)
    if origin is not None and origin != "null" and origin.partition("://")[2] != request.host:
        return AuthError(403, "cross_site_request", f"cross-origin {request.method} from {origin} refused")
    if origin == "null":
        return AuthError(403, "cross_site_request", "a request with Origin: null is refused; send an API key")
    if request.body_exists and not forms:
        ctype = headers.get(_CONTENT_TYPE)
        # The usual exact value needs no parsing (request.content_type parses the header).
        if ctype is None or (ctype != "application/json" and request.content_type in _SIMPLE_TYPES):
            got = request.content_type if ctype is not None else "no Content-Type"
            return AuthError(
                415,
                "unsupported_media_type",
                f"expected Content-Type: application/json; got {got} (a form or text body is accepted only "
                "with an API key, since any web page can send one)",
            )
    return None


class Guard:
    """The credential rules of one server: the admin key, the key verifier, whether keys are required."""

    def __init__(
        self,
        *,
        admin_key: str = "",
        admin_setting: str,
        verifier: Verifier | None = None,
        require_key: bool = False,
        require_setting: str = "",
    ) -> None:
        self._admin_digest = digest(admin_key) if admin_key else None
        self.admin_setting = admin_setting
        self.verifier = verifier
        self.require_key = require_key
        self.require_setting = require_setting

    @property
    def admin_configured(self) -> bool:
        """Whether a bootstrap admin key is set."""
        return self._admin_digest is not None

    async def check(self, request: web.Request, scope: str, forms: bool = False) -> Identity:
        """The caller's identity when it may use a route of `scope`; else AuthError (401/403/415).

        `forms`: the route reads a JSON body sent as a form too (Ollama's API, whose documented curl
        examples send one); cross-origin browsers are still refused by their Origin.
        """
        if scope == PUBLIC:
            return ANONYMOUS
        credential = credential_of(request.headers)
        if credential is None:
            if request.method in _MUTATING and (refusal := cross_site_refusal(request, forms)) is not None:
                raise refusal
            if scope == ADMIN:
                raise self._admin_missing()
            if self.require_key:
                raise AuthError(
                    401,
                    "missing_api_key",
                    "this server requires an API key: send Authorization: Bearer llk_... or X-API-Key",
                )
            return ANONYMOUS
        verifier = self.verifier
        identity = verifier.known(credential) if verifier is not None else None
        if identity is None:
            identity = await self.identify(credential, needed=scope == ADMIN or self.require_key)
        if scope != ANY and scope not in identity.scopes and not identity.anonymous:
            raise AuthError(
                403,
                "insufficient_scope",
                f"this key may use {', '.join(sorted(identity.scopes)) or 'nothing'}; this route needs "
                f"the {scope} scope",
            )
        if identity.anonymous and scope == ADMIN:
            raise AuthError(401, "invalid_api_key", "the API key is not an admin key of this server")
        return identity

    async def identify(self, credential: str, *, needed: bool = True) -> Identity:
        """The identity a credential stands for: the admin key, else a key the verifier knows.

        A credential in no format this server issues is anonymous when no key is `needed`: OpenAI's
        client always sends one (`sk-...`, "x"), and a server that requires none must not refuse it.
        """
        if self.verifier is not None and self.verifier.recognizes(credential):
            try:
                return await self.verifier.identify(credential)
            except AuthError as refused:
                # An admin key that happens to look like an API key is still the admin key.
                if refused.status != 401 or not self._is_admin(credential):
                    raise
                return BOOTSTRAP_ADMIN
        if self._is_admin(credential):
            return BOOTSTRAP_ADMIN
        if needed:
            raise AuthError(401, "invalid_api_key", "the API key is not valid for this server")
        return ANONYMOUS

    def _is_admin(self, credential: str) -> bool:
        return self._admin_digest is not None and hmac.compare_digest(digest(credential), self._admin_digest)

    def _admin_missing(self) -> AuthError:
        if self.admin_configured:
            return AuthError(
                401, "missing_api_key", "admin routes need an admin key: send Authorization: Bearer <key>"
            )
        return AuthError(
            403,
            "admin_disabled",
            f"admin routes need an admin credential and none is configured; set {self.admin_setting}",
        )
