"""OAuth 2.0 for a fleet: one access token shared by every process, rotated refresh tokens
presented exactly once.

A source with ``oauth2_client_credentials`` or ``oauth2_refresh_token`` auth sends
``Authorization: Bearer <access token>``. The token is obtained by one process and shared
through a ``TokenStore`` (Redis, in the workers) until shortly before ``expires_in`` runs out:
token endpoints are rate limited and some bill per token. A request answered 401 gets a fresh
token once and is sent again.

Refresh tokens may rotate: each refresh answers a new refresh token and the one presented is
dead; a provider with reuse detection revokes the whole grant when a used one comes again. So:

- exactly one process refreshes at a time (the store's lock), and re-reads the shared token
  once it holds the lock (another may have refreshed meanwhile);
- the newest refresh token is *kept* (the store writes it to Redis and to the target's state
  table, so it outlives a Redis flush and a restart of every worker), sealed with a key from
  the environment (``SLUICE_SECRET_KEY``); a worker whose sluice.toml still holds the first
  (used) refresh token takes the kept one, since both name the same ``origin``;
- before presenting a refresh token the kept record is marked ``presenting``; the answer
  clears it. A record found ``presenting`` means a refresh was cut off after the token may
  have reached the provider: presenting it again could revoke the grant, so Sluice refuses
  (``AuthRefused``) and asks for a new refresh token instead. A refresh token is never
  presented twice, and the token request is never retried once it may have been sent.

A token endpoint that refuses (``invalid_client``, ``invalid_grant``) raises ``AuthRefused``
with its reason; the refusal is shared for a few minutes, so the other processes fail at once
instead of asking again. Nothing in the store is in clear text: tokens are sealed (Fernet).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import time
from collections.abc import AsyncGenerator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
from cryptography.fernet import Fernet, InvalidToken

from integrations.errors import AuthRefused, ConfigError, TransientHTTPError
from integrations.http.auth import OAuth2RefreshToken, OAuth2Settings
from integrations.http.client import make_client
from integrations.http.retry import BEARER
from integrations.secrets import Redactor, excerpt
from integrations.settings import HttpSettings

# A refusal is shared this long: every process fails at once, then one asks again.
REFUSAL_TTL = 300.0
LOCK_TIMEOUT = 60.0  # the longest a process waits for the refresher
# What a bearer token may hold, so that it is one header value (RFC 6750's b64token, and
# the other printable ASCII some providers use).
_HEADER_SAFE = re.compile(r"[\x21-\x7e]+")
# The longest a token is shared: one without expires_in (or with an absurd one) is asked for
# again after a day instead of living in the store forever (Redis takes no infinite TTL).
MAX_SHARED = 86400.0


class TokenStore(Protocol):
    """Where one source's tokens are shared and kept. Values are sealed text; names are
    short and the store adds the source to them."""

    async def get(self, name: str) -> str | None:
        """A shared value (None: absent or expired)."""
        ...

    async def put(self, name: str, value: str, *, ttl: float) -> None:
        """Share ``value`` for ``ttl`` seconds."""
        ...

    async def delete_if(self, name: str, value: str) -> None:
        """Delete a shared value if it is still ``value``."""
        ...

    def lock(self, name: str, *, timeout: float) -> AbstractAsyncContextManager[None]:
        """Held by one process of the fleet at a time; waits up to ``timeout`` seconds for it,
        then raises TransientHTTPError."""
        ...

    async def kept(self) -> list[str]:
        """Every copy of the kept refresh-token record (Redis and the target; [] when none)."""
        ...

    async def keep(self, value: str) -> None:
        """Write the kept record to every place that keeps it; raises when none took it."""
        ...


class LocalTokenStore:
    """A ``TokenStore`` for one process (``sluice preview``, unit tests)."""

    def __init__(self) -> None:
        self.values: dict[str, tuple[str, float]] = {}
        self.records: list[str] = []
        self._locks: dict[str, asyncio.Lock] = {}

    async def get(self, name: str) -> str | None:
        value, until = self.values.get(name, ("", 0.0))
        return value if until > time.monotonic() else None

    async def put(self, name: str, value: str, *, ttl: float) -> None:
        self.values[name] = (value, time.monotonic() + ttl)

    async def delete_if(self, name: str, value: str) -> None:
        if self.values.get(name, ("",))[0] == value:
            del self.values[name]

    def lock(self, name: str, *, timeout: float) -> AbstractAsyncContextManager[None]:
        return self._locks.setdefault(name, asyncio.Lock())

    async def kept(self) -> list[str]:
        return list(self.records)

    async def keep(self, value: str) -> None:
        self.records = [value]


class Sealer:
    """Fernet (AES-128-CBC + HMAC-SHA256) under a key derived from a secret of the
    environment. A value sealed under another key opens as None."""

    def __init__(self, secret: str) -> None:
        digest = hashlib.sha256(b"sluice-oauth\0" + secret.encode()).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(digest))

    def seal(self, data: dict[str, Any]) -> str:
        return self._fernet.encrypt(json.dumps(data).encode()).decode("ascii")

    def open(self, text: str | None) -> dict[str, Any] | None:
        if not text:
            return None
        try:
            data = json.loads(self._fernet.decrypt(text.encode("ascii")))
        except (InvalidToken, ValueError):
            return None
        return data if isinstance(data, dict) else None


@dataclass(frozen=True)
class Token:
    access_token: str
    expires_at: float  # epoch seconds; inf when the provider gave no expires_in
    renew_at: float  # when a process asks for the next one


def fingerprint(text: str) -> str:
    return hashlib.sha256(("sluice\0" + text).encode()).hexdigest()[:16]


class TokenSource:
    """The access tokens of one source's OAuth 2.0 auth, shared through ``store``.

    ``secret_key``: ``SLUICE_SECRET_KEY`` (required for refresh tokens; client credentials
    fall back to a key derived from the client secret, which Redis never holds).
    Raises ConfigError when no key can be had."""

    def __init__(self, settings: OAuth2Settings, store: TokenStore, *,
                 secret_key: str | None, http: HttpSettings,
                 transport: httpx.AsyncBaseTransport | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        refreshing = isinstance(settings, OAuth2RefreshToken)
        key = secret_key or (None if refreshing else settings.client_secret)
        if not key:
            raise ConfigError(
                f"auth type {settings.type!r} needs SLUICE_SECRET_KEY in the environment: the "
                "rotated refresh tokens are kept encrypted with it" if refreshing else
                "auth type 'oauth2_client_credentials' needs a client_secret or "
                "SLUICE_SECRET_KEY (the shared token is encrypted with it)")
        self.settings = settings
        self.store = store
        self.sealer = Sealer(key)
        self.clock = clock
        # Names in the store change with the credentials: an edited auth section starts
        # afresh instead of using a token (or a refusal) of the old one.
        self.tag = fingerprint(settings.model_dump_json())
        # The chain of refresh tokens that started from the one in sluice.toml.
        self.origin = (fingerprint(settings.refresh_token)
                       if isinstance(settings, OAuth2RefreshToken) else "")
        # Never retried once sent: a refresh token presented twice is a revoked grant. (The
        # client-credentials grant can be asked again, but one answer is all it needs too.)
        self._http = http.model_copy(update={"retries": 0})
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._memo: Token | None = None

    # -- the bearer token

    async def token(self) -> str:
        """A valid access token: this process's, the fleet's, or a new one."""
        now = self.clock()
        if self._memo is not None and now < self._memo.renew_at:
            return self._memo.access_token
        shared = self._shared(await self.store.get(self._name("token")))
        if shared is not None and now < shared.renew_at:
            self._memo = shared
            return shared.access_token
        return (await self._renew(stale=None)).access_token

    async def renew(self, stale: str) -> str:
        """A token other than ``stale``, which the API answered 401 to."""
        if self._memo is not None and self._memo.access_token == stale:
            self._memo = None
        raw = await self.store.get(self._name("token"))
        shared = self._shared(raw)
        if raw is not None and shared is not None and shared.access_token == stale:
            await self.store.delete_if(self._name("token"), raw)
        return (await self._renew(stale=stale)).access_token

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # -- one refresher at a time

    async def _renew(self, *, stale: str | None) -> Token:
        await self._refused()
        async with self.store.lock(self._name("lock"), timeout=LOCK_TIMEOUT):
            shared = self._shared(await self.store.get(self._name("token")))
            if (shared is not None and shared.access_token != stale
                    and self.clock() < shared.renew_at):
                self._memo = shared  # another process refreshed while this one waited
                return shared
            await self._refused()
            if isinstance(self.settings, OAuth2RefreshToken):
                answer = await self._refresh(self.settings)
            else:
                answer = await self._post({"grant_type": "client_credentials"})
            unusable = self._unusable(answer)
            if unusable:  # after _refresh kept the rotated refresh token: it stays usable
                message = f"POST {self.settings.token_url} answered {unusable}"
                await self._refuse(message)
                raise AuthRefused(message)
            token = self._token(answer)
            ttl = min(token.renew_at - self.clock(), MAX_SHARED)
            if ttl > 0:
                await self.store.put(self._name("token"), self.sealer.seal(
                    {"access_token": token.access_token, "expires_at": token.expires_at,
                     "renew_at": token.renew_at}), ttl=ttl)
            self._memo = token
            return token

    async def _refresh(self, settings: OAuth2RefreshToken) -> dict[str, Any]:
        """Present the newest refresh token of this chain, exactly once."""
        current = await self._newest()
        if current is not None and current.get("presenting"):
            reason = ("a refresh was cut off after its refresh token may have reached the "
                      "token endpoint; presenting it again could revoke the grant, so put a new "
                      "refresh token in the source's configuration")
            await self._refuse(reason)
            raise AuthRefused(f"{self.settings.token_url}: {reason}")
        generation = current["n"] if current else 0
        refresh_token = current["refresh_token"] if current else settings.refresh_token
        await self._keep(refresh_token, generation + 1, presenting=True)
        try:
            answer = await self._post({"grant_type": "refresh_token",
                                       "refresh_token": refresh_token})
        except _NotSent:
            await self._keep(refresh_token, generation + 2, presenting=False)
            raise TransientHTTPError(f"POST {self.settings.token_url}: could not connect; the "
                                     "refresh token was not sent") from None
        except (TransientHTTPError, AuthRefused) as exc:
            # The endpoint answered an error (4xx: invalid_client, invalid_scope, …; 5xx, 429):
            # it did not take the token, which a corrected configuration may present again.
            # (A 2xx without a token may have rotated it: that stays ``presenting``.)
            if getattr(exc, "retry_after", None) is not None or getattr(exc, "answered", False):
                await self._keep(refresh_token, generation + 2, presenting=False)
            raise
        rotated = answer.get("refresh_token")
        await self._keep(rotated if isinstance(rotated, str) and rotated else refresh_token,
                         generation + 2, presenting=False)
        return answer

    async def _newest(self) -> dict[str, Any] | None:
        """The kept record of this chain with the highest generation (Redis and the target
        may each have missed a write)."""
        best = None
        for text in await self.store.kept():
            record = self.sealer.open(text)
            if (record is not None and record.get("origin") == self.origin
                    and (best is None or record.get("n", 0) > best.get("n", 0))):
                best = record
        return best

    async def _keep(self, refresh_token: str, generation: int, *, presenting: bool) -> None:
        await self.store.keep(self.sealer.seal({
            "origin": self.origin, "n": generation, "refresh_token": refresh_token,
            "presenting": presenting, "at": self.clock()}))

    async def _refused(self) -> None:
        reason = self.sealer.open(await self.store.get(self._name("refused")))
        if reason is not None:
            raise AuthRefused(str(reason.get("reason")))

    async def _refuse(self, reason: str) -> None:
        await self.store.put(self._name("refused"), self.sealer.seal({"reason": reason}),
                             ttl=REFUSAL_TTL)

    # -- the token endpoint

    async def _post(self, form: dict[str, str]) -> dict[str, Any]:
        """POST the grant; the answer's JSON. Raises AuthRefused (a 4xx: invalid_client,
        invalid_grant, …), TransientHTTPError (429, 5xx, a broken connection) or _NotSent."""
        s = self.settings
        if s.scopes:
            form["scope"] = " ".join(s.scopes)
        if s.audience:
            form["audience"] = s.audience
        headers = {"Accept": "application/json"}
        if s.client_auth == "body" or s.client_secret is None:
            form["client_id"] = s.client_id
            if s.client_secret is not None:
                form["client_secret"] = s.client_secret
        else:  # RFC 6749 2.3.1: form-urlencoded before base64
            headers["Authorization"] = basic_client(s.client_id, s.client_secret)
        client = self._token_client()
        try:
            # A redirect is not followed: a 307 would carry the secrets to wherever it points.
            response = await client.post(s.token_url, data=form, headers=headers,
                                         follow_redirects=False)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise _NotSent(str(exc)) from exc
        except httpx.TransportError as exc:
            raise TransientHTTPError(f"POST {s.token_url} failed: {type(exc).__name__}") from exc
        # The endpoint may echo what it was sent; the process's Redactor knows only ${...}
        # values, never a rotated refresh token.
        sent = Redactor(v for v in (s.client_secret, form.get("refresh_token")) if v)
        return await self._answer(response, sent)

    async def _answer(self, response: httpx.Response, sent: Redactor) -> dict[str, Any]:
        """The token answer's JSON. Raises AuthRefused, with ``answered`` set when the
        endpoint refused outright (not 2xx: it did not take a refresh token), or
        TransientHTTPError."""
        where = f"POST {self.settings.token_url}"
        try:
            body = response.json()
        except ValueError:
            body = None
        status = response.status_code
        if status == 429 or status >= 500:
            exc = TransientHTTPError(f"{where} answered {status}")
            exc.answered = True  # type: ignore[attr-defined]
            raise exc
        if status >= 400 or not isinstance(body, dict) or not isinstance(
                body.get("access_token"), str):
            if isinstance(body, dict) and isinstance(body.get("error"), str):
                reason = excerpt(sent.text(body["error"]), 80)
                detail = body.get("error_description")
                if isinstance(detail, str) and detail:
                    reason += f" ({excerpt(sent.text(detail), 200)})"
            elif response.is_redirect:
                to = response.request.url.join(response.headers["location"])
                reason = (f"{status}, a redirect to {to.copy_with(query=None, fragment=None)} "
                          "(not followed: set token_url to the endpoint itself)")
            else:
                reason = f"{status}, not an OAuth 2.0 token answer"
            message = f"{where} refused the source's credentials: {reason}"
            await self._refuse(message)
            refused = AuthRefused(message)
            refused.answered = not 200 <= status < 300  # type: ignore[attr-defined]
            raise refused
        return body

    @staticmethod
    def _unusable(answer: dict[str, Any]) -> str | None:
        """Why a token answer cannot be sent as ``Authorization: Bearer``, or None."""
        kind = answer.get("token_type", "bearer")
        if not isinstance(kind, str) or kind.lower() != "bearer":
            return (f"a token of type {excerpt(str(kind), 40)!r}; Sluice sends bearer tokens "
                    "only (RFC 6750)")
        if not _HEADER_SAFE.fullmatch(answer["access_token"]):
            # A line break would end the header (h11 refuses it, with the token in its error).
            return "an access_token with spaces or control characters"
        return None

    def _token(self, answer: dict[str, Any]) -> Token:
        now = self.clock()
        lifetime = answer.get("expires_in")
        if isinstance(lifetime, str) and lifetime.isdigit():
            lifetime = int(lifetime)
        if (not isinstance(lifetime, (int, float)) or isinstance(lifetime, bool)
                or not 0 < lifetime < float("inf")):  # NaN too: it would renew at every call
            return Token(answer["access_token"], float("inf"), float("inf"))
        margin = min(self.settings.expiry_margin, lifetime / 10)
        return Token(answer["access_token"], now + lifetime, now + lifetime - margin)

    def _token_client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = make_client(base_url=self.settings.token_url, settings=self._http,
                                       transport=self._transport, max_connections=4)
        return self._client

    def _shared(self, text: str | None) -> Token | None:
        data = self.sealer.open(text)
        if data is None or not isinstance(data.get("access_token"), str):
            return None
        return Token(data["access_token"], float(data["expires_at"]), float(data["renew_at"]))

    def _name(self, what: str) -> str:
        return f"{self.tag}:{what}"


class _NotSent(Exception):
    """The token request never left: the refresh token was not presented."""


def basic_client(client_id: str, client_secret: str) -> str:
    """The client's ``Authorization: Basic`` value: RFC 6749 2.3.1 form-encodes the id and
    secret before base64 (a secret with ':' or '%' differs from plain RFC 7617)."""
    from urllib.parse import quote_plus

    raw = f"{quote_plus(client_id)}:{quote_plus(client_secret)}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


class OAuth2(httpx.Auth):
    """Bearer tokens from a ``TokenSource``, set on each attempt of a request just before it
    is sent (``integrations.http.retry.BEARER``: after any wait for the rate limit, so a
    short-lived token is not sent stale); a 401 gets a fresh token once."""

    requires_response_body = False

    def __init__(self, source: TokenSource) -> None:
        self.source = source

    def sync_auth_flow(self, request: httpx.Request):  # type: ignore[no-untyped-def]
        raise RuntimeError("OAuth 2.0 sources are read with an AsyncClient")

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        request.extensions[BEARER] = self.source
        response = yield request
        sent = response.request.headers.get("Authorization", "")
        if response.status_code == 401 and sent.startswith("Bearer "):
            await self.source.renew(sent.removeprefix("Bearer "))
            yield request
