"""
The C{keystone} auth driver: every request carries an OpenStack Keystone
token in C{X-Auth-Token}; the project is the one the token is scoped to.

Tokens are validated with Keystone's v3 API (C{GET /v3/auth/tokens} with
C{X-Subject-Token}), authenticated by the node's own service token, which is
renewed before it expires and acquired again when Keystone answers 401.
Validated tokens are kept in a bounded cache for at most C{cache_ttl}
seconds and never past their own expiry, so a revoked token stops working
within C{cache_ttl}.  When Keystone cannot be reached, a token that is not
in the cache gets a 503: the door stays shut.

Only the token is believed.  C{X-Project-ID} and the project in the URL
must name the token's project; C{X-Roles}, C{X-Identity-Status} and the
like, which a client can write, are never read.
"""

import hashlib
import json
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Mapping, Optional
from urllib.parse import urlsplit

import treq
from treq.client import HTTPClient
from twisted.internet.defer import Deferred, TimeoutError, succeed
from twisted.logger import Logger
from twisted.web.client import Agent, HTTPConnectionPool
from zope.interface import implementer

from marconi.core.errors import (
    Forbidden,
    IdentityUnavailable,
    MarconiError,
    Unauthorized,
)
from marconi.core.interfaces import IAuthDriver

log = Logger()

MAX_TOKEN = 8192
MAX_RESPONSE = 1024 * 1024
# The service token is renewed this many seconds before it expires (or at
# half its life, for short-lived tokens).
RENEW_MARGIN = 300.0


@dataclass(frozen=True)
class KeystoneSettings:
    """
    The C{[auth:keystone]} section of the configuration.
    """

    url: str
    username: Optional[str] = None
    password: Optional[str] = None
    userDomain: str = "default"
    projectName: Optional[str] = None
    projectDomain: str = "default"
    applicationCredentialId: Optional[str] = None
    applicationCredentialSecret: Optional[str] = None
    cacheTTL: float = 60.0
    cacheSize: int = 10000
    timeout: float = 5.0
    allowedRoles: frozenset = field(default_factory=frozenset)
    adminRoles: frozenset = frozenset({"admin"})


def _roles(raw: str) -> frozenset:
    return frozenset(r.strip() for r in raw.split(",") if r.strip())


def _positive(settings: Mapping[str, str], name: str, default: float) -> float:
    raw = settings.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"[auth:keystone] {name} must be a number") from None
    if value <= 0:
        raise ValueError(f"[auth:keystone] {name} must be positive")
    return value


def parseSettings(settings: Mapping[str, str]) -> KeystoneSettings:
    """
    Read the C{[auth:keystone]} settings.

    @raise ValueError: saying which setting is missing or wrong.
    """
    known = {
        "url",
        "username",
        "password",
        "user_domain",
        "project_name",
        "project_domain",
        "application_credential_id",
        "application_credential_secret",
        "cache_ttl",
        "cache_size",
        "timeout",
        "allowed_roles",
        "admin_roles",
    }
    unknown = set(settings) - known
    if unknown:
        raise ValueError(
            f"unknown setting(s) in [auth:keystone]: {', '.join(sorted(unknown))}"
        )
    values = {k: v.strip() for k, v in settings.items()}
    url = values.get("url", "").rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            "[auth:keystone] url must be Keystone's http(s) URL, "
            "e.g. https://keystone.example:5000/v3"
        )
    if not url.endswith("/v3"):
        url += "/v3"
    appId = values.get("application_credential_id") or None
    appSecret = values.get("application_credential_secret") or None
    if appId or appSecret:
        if not (appId and appSecret):
            raise ValueError(
                "[auth:keystone] application_credential_id and "
                "application_credential_secret go together"
            )
    elif not (
        values.get("username") and values.get("password") and values.get("project_name")
    ):
        raise ValueError(
            "[auth:keystone] needs the service user's username, password and "
            "project_name, or an application_credential_id and "
            "application_credential_secret"
        )
    size = _positive(values, "cache_size", 10000)
    return KeystoneSettings(
        url=url,
        username=values.get("username") or None,
        password=values.get("password") or None,
        userDomain=values.get("user_domain") or "default",
        projectName=values.get("project_name") or None,
        projectDomain=values.get("project_domain") or "default",
        applicationCredentialId=appId,
        applicationCredentialSecret=appSecret,
        cacheTTL=_positive(values, "cache_ttl", 60.0),
        cacheSize=int(size),
        timeout=_positive(values, "timeout", 5.0),
        allowedRoles=_roles(values.get("allowed_roles", "")),
        adminRoles=_roles(values.get("admin_roles", "admin")),
    )


@dataclass(frozen=True)
class Identity:
    """
    What a validated token says: its project, its roles, and when it
    expires (in seconds of the injected clock).
    """

    project: str
    roles: frozenset
    expires: float


def _timestamp(text: str) -> float:
    """
    Keystone's C{expires_at} (ISO 8601, UTC, C{Z}) in POSIX seconds.
    """
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class _Reply:
    def __init__(self, code: int, headers: Any, body: bytes) -> None:
        self.code = code
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            raise IdentityUnavailable(
                "The identity service sent an answer that is not JSON."
            ) from None


@implementer(IAuthDriver)
class KeystoneAuth:
    """
    Validates Keystone tokens, with a cache.

    @param clock: the L{IReactorTime} that tells the time (POSIX seconds,
        as the reactor's); cache entries and the service token expire on it.
    @param http: a L{treq.client.HTTPClient}; by default one over a
        persistent connection pool of its own, closed by L{close}.
    """

    trustsHeaders = False

    def __init__(
        self,
        settings: KeystoneSettings,
        reactor: Any,
        clock: Any = None,
        http: Optional[Any] = None,
    ) -> None:
        self.settings = settings
        self.clock = reactor if clock is None else clock
        self.pool: Optional[HTTPConnectionPool] = None
        if http is None:
            self.pool = HTTPConnectionPool(reactor, persistent=True)
            self.pool.maxPersistentPerHost = 8
            self.pool.retryAutomatically = False
            agent = Agent(reactor, connectTimeout=settings.timeout, pool=self.pool)
            http = HTTPClient(agent)
        self.http = http
        self.challenge = f'Keystone uri="{settings.url}"'
        self._cache: OrderedDict = OrderedDict()
        self._pending: dict = {}
        self._service: Optional[tuple] = None

    def close(self) -> Deferred:
        if self.pool is None:
            return succeed(None)
        return self.pool.closeCachedConnections()

    # IAuthDriver

    def authenticate(
        self, headers: Mapping[bytes, bytes], urlProject: Optional[str]
    ) -> Deferred:
        return Deferred.fromCoroutine(self._authenticate(headers, urlProject))

    def isAdmin(self, headers: Mapping[bytes, bytes]) -> Deferred:
        async def check() -> bool:
            token = headers.get(b"x-auth-token")
            if not token:
                return False
            try:
                identity = await self.identify(token)
            except MarconiError:
                return False
            return bool(identity.roles & self.settings.adminRoles)

        return Deferred.fromCoroutine(check())

    async def _authenticate(
        self, headers: Mapping[bytes, bytes], urlProject: Optional[str]
    ) -> str:
        token = headers.get(b"x-auth-token")
        if not token:
            raise Unauthorized(
                "This node requires a Keystone token in X-Auth-Token.",
                self.challenge,
            )
        identity = await self.identify(token)
        if self.settings.allowedRoles and not (
            identity.roles & self.settings.allowedRoles
        ):
            raise Forbidden("The token has none of the roles this service allows.")
        header = headers.get(b"x-project-id")
        if header is not None and header.decode("latin-1") != identity.project:
            raise Forbidden("X-Project-ID is not the project the token is scoped to.")
        if urlProject is not None and urlProject != identity.project:
            raise Forbidden(
                "The project in the URL is not the project the token is scoped to."
            )
        return identity.project

    # The cache.

    async def identify(self, token: bytes) -> Identity:
        """
        The identity of a token, from the cache or from Keystone.

        @raise Unauthorized: Keystone does not know the token (invalid,
            expired or revoked).
        @raise Forbidden: the token is not scoped to a project.
        @raise IdentityUnavailable: Keystone could not say.
        """
        if len(token) > MAX_TOKEN or not _TOKEN.fullmatch(token):
            # Fernet and JWS tokens are URL-safe base64; anything else
            # cannot be one and is not worth a call.
            raise Unauthorized("The token is not well formed.", self.challenge)
        key = hashlib.sha256(token).digest()
        now = self.clock.seconds()
        cached = self._cache.get(key)
        if cached is not None:
            identity, until = cached
            if now < until:
                self._cache.move_to_end(key)
                return identity
            del self._cache[key]

        async def validate() -> Identity:
            identity = await self._validate(token)
            self._remember(key, identity)
            return identity

        return await self._once(key, validate)

    async def _once(self, key: Any, work: Any) -> Any:
        """
        Run C{work()} once for all the callers that ask for C{key} while it
        runs, and give each its result.
        """
        waiters = self._pending.get(key)
        if waiters is not None:
            waiter: Deferred = Deferred()
            waiters.append(waiter)
            return await waiter
        self._pending[key] = []
        try:
            result = await work()
        except BaseException as e:
            for d in self._pending.pop(key):
                d.errback(e)
            raise
        for d in self._pending.pop(key):
            d.callback(result)
        return result

    def _remember(self, key: bytes, identity: Identity) -> None:
        until = min(self.clock.seconds() + self.settings.cacheTTL, identity.expires)
        self._cache[key] = (identity, until)
        self._cache.move_to_end(key)
        while len(self._cache) > self.settings.cacheSize:
            self._cache.popitem(last=False)

    # Keystone.

    async def _validate(self, token: bytes) -> Identity:
        for attempt in (1, 2):
            service = await self.serviceToken()
            reply = await self._call(
                "GET",
                "/auth/tokens?nocatalog",
                {b"X-Auth-Token": [service], b"X-Subject-Token": [token]},
            )
            if reply.code == 401 and attempt == 1:
                # Our own token was revoked or expired early: get another.
                self._service = None
                continue
            break
        if reply.code == 200:
            return self._identity(reply.json())
        if reply.code == 404:
            raise Unauthorized(
                "The token is invalid, expired or revoked.", self.challenge
            )
        if reply.code in (401, 403):
            log.error(
                "Keystone refused to validate tokens for this service "
                "(HTTP {code}): check the [auth:keystone] credentials and that "
                "the service user has the service or admin role",
                code=reply.code,
            )
        else:
            log.error(
                "Keystone answered HTTP {code} to a token validation", code=reply.code
            )
        raise IdentityUnavailable("The identity service could not validate the token.")

    def _identity(self, document: Any) -> Identity:
        try:
            token = document["token"]
            project = token.get("project")
            expires = _timestamp(token["expires_at"])
            roles = frozenset(r["name"] for r in token.get("roles", ()))
        except (KeyError, TypeError, ValueError, AttributeError):
            raise IdentityUnavailable(
                "The identity service sent a token document this node cannot read."
            ) from None
        if not isinstance(project, dict) or not isinstance(project.get("id"), str):
            raise Forbidden("The token is not scoped to a project.")
        return Identity(project=project["id"], roles=roles, expires=expires)

    async def serviceToken(self) -> bytes:
        """
        This node's own token, renewed when it is near its expiry.
        """
        if self._service is not None:
            token, renewAt = self._service
            if self.clock.seconds() < renewAt:
                return token
        return await self._once(_SERVICE, self._fetchServiceToken)

    async def _fetchServiceToken(self) -> bytes:
        s = self.settings
        if s.applicationCredentialId:
            identity = {
                "methods": ["application_credential"],
                "application_credential": {
                    "id": s.applicationCredentialId,
                    "secret": s.applicationCredentialSecret,
                },
            }
            auth: dict = {"identity": identity}
        else:
            identity = {
                "methods": ["password"],
                "password": {
                    "user": {
                        "name": s.username,
                        "domain": {"id": s.userDomain},
                        "password": s.password,
                    }
                },
            }
            auth = {
                "identity": identity,
                "scope": {
                    "project": {
                        "name": s.projectName,
                        "domain": {"id": s.projectDomain},
                    }
                },
            }
        reply = await self._call(
            "POST",
            "/auth/tokens?nocatalog",
            {b"Content-Type": [b"application/json"]},
            json.dumps({"auth": auth}).encode(),
        )
        token = reply.headers.getRawHeaders(b"x-subject-token", [None])[0]
        if reply.code != 201 or not token:
            log.error(
                "Keystone refused this service's credentials (HTTP {code}): "
                "check [auth:keystone]",
                code=reply.code,
            )
            raise IdentityUnavailable("This node cannot authenticate to Keystone.")
        try:
            expires = _timestamp(reply.json()["token"]["expires_at"])
        except (KeyError, TypeError, ValueError):
            raise IdentityUnavailable(
                "The identity service sent a token document this node cannot read."
            ) from None
        now = self.clock.seconds()
        life = max(expires - now, 0.0)
        self._service = (token, now + max(life - RENEW_MARGIN, life / 2))
        log.info("Acquired a Keystone service token")
        return token

    async def _call(
        self, method: str, path: str, headers: dict, body: Optional[bytes] = None
    ) -> _Reply:
        chunks: list = []
        size = 0

        def collect(data: bytes) -> None:
            nonlocal size
            size += len(data)
            if size > MAX_RESPONSE:
                raise ValueError("too large")
            chunks.append(data)

        async def exchange() -> _Reply:
            response = await self.http.request(
                method,
                self.settings.url + path,
                headers=headers,
                data=body,
                unbuffered=True,
                allow_redirects=False,
            )
            await treq.collect(response, collect)
            return _Reply(response.code, response.headers, b"".join(chunks))

        call = Deferred.fromCoroutine(exchange())
        call.addTimeout(self.settings.timeout, self.clock)
        try:
            return await call
        except TimeoutError:
            log.error(
                "Keystone did not answer within {timeout} seconds",
                timeout=self.settings.timeout,
            )
        except MarconiError:
            raise
        except Exception as e:
            log.error("Keystone cannot be reached: {error}", error=str(e))
        raise IdentityUnavailable(
            "The identity service cannot be reached; try again later."
        )


_TOKEN = re.compile(rb"[A-Za-z0-9_=.~+/-]+")
# The key under which the service token's acquisition is shared.
_SERVICE = object()


def makeAuth(settings: Mapping[str, str], reactor: Any) -> KeystoneAuth:
    return KeystoneAuth(parseSettings(settings), reactor)
