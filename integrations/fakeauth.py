"""What the fake API (``integrations.fakeapi``) asks of a request before answering a GET: the
credential checks of each auth type, so that every auth type is tested against a server that
checks it.

A check takes the request's headers (names in lower case) and query, and gives ``None`` when
the request may pass, else the ``WWW-Authenticate`` value of the 401 answer::

    FakeAPI(auth=bearer_token("s3cret"))
    FakeAPI(auth=basic("bot", "pw"))
    FakeAPI(auth=api_key("X-API-Key", "k", location="header"))   # or location="query"
    FakeAPI(auth=header("Authorization", "Token abc"))
    FakeAPI(auth=bearer(Introspection(url, "sluice-rs", "sluice-rs-secret")))

``Introspection`` asks an OAuth 2.0 authorization server (RFC 7662) whether a bearer token is
active, and keeps a positive answer for the token's remaining life (its ``exp``), so that the
fake API does not ask on every request.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import threading
import time
from collections.abc import Callable, Mapping
from typing import Literal

import httpx

# headers (lower-case names), query -> None (pass) or the WWW-Authenticate value of the 401
AuthCheck = Callable[[Mapping[str, str], Mapping[str, str]], "str | None"]

REALM = 'realm="fakeapi"'


def same(given: str | None, expected: str) -> bool:
    """``given == expected`` in constant time (the fake is no oracle either)."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def bearer(verify: Callable[[str], bool]) -> AuthCheck:
    """``Authorization: Bearer TOKEN`` with ``verify(TOKEN)`` true. Without a bearer token
    the 401 names only the scheme (RFC 6750 §3.1); with a refused one, ``invalid_token``."""

    def check(headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return f"Bearer {REALM}"
        if not verify(token.strip()):
            return f'Bearer {REALM}, error="invalid_token"'
        return None

    return check


def bearer_token(token: str) -> AuthCheck:
    """Exactly ``Authorization: Bearer TOKEN``."""
    return bearer(lambda given: same(given, token))


def header(name: str, value: str) -> AuthCheck:
    """Exactly the header ``name: value`` (any scheme: ``Authorization: Token abc``)."""
    lower = name.lower()

    def check(headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
        return None if same(headers.get(lower), value) else REALM

    return check


def basic(username: str, password: str) -> AuthCheck:
    """HTTP basic authentication (RFC 7617) with this user and password."""

    def check(headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
        scheme, _, encoded = headers.get("authorization", "").partition(" ")
        try:
            given = base64.b64decode(encoded.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            given = None
        ok = scheme.lower() == "basic" and same(given, f"{username}:{password}")
        return None if ok else f'Basic {REALM}, charset="UTF-8"'

    return check


def api_key(name: str, value: str, *, location: Literal["header", "query"] = "header"
            ) -> AuthCheck:
    """An API key in a header or a query parameter called ``name``."""
    lower = name.lower()

    def check(headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
        given = headers.get(lower) if location == "header" else query.get(name)
        return None if same(given, value) else f'ApiKey {REALM}, in="{location}"'

    return check


class Introspection:
    """``verify(token)`` for ``bearer``: is the token active, says the authorization server's
    introspection endpoint (``url``, asked as the client ``client_id``, basic auth)?

    A positive answer is kept until the token's ``exp`` (so a token revoked meanwhile still
    passes until then; ``forget()`` drops what is kept); a negative one is not kept.
    ``calls`` counts the questions asked; ``clock`` and ``http`` are test seams. An endpoint
    that does not answer 200 raises ``httpx.HTTPStatusError`` (the fake API then drops the
    connection and prints the traceback: a broken harness, not a 401).
    """

    def __init__(self, url: str, client_id: str, client_secret: str, *,
                 clock: Callable[[], float] = time.time,
                 http: httpx.Client | None = None) -> None:
        self.url = url
        self.http = http or httpx.Client(timeout=10)  # thread-safe: the handlers share it
        self.auth = (client_id, client_secret)
        self.clock = clock
        self.calls = 0
        self.lock = threading.Lock()
        self.active: dict[str, float] = {}  # token -> its exp (epoch seconds)

    def ask(self, token: str) -> dict[str, object]:
        """The introspection answer for ``token`` (RFC 7662 §2.2), asked every time."""
        with self.lock:
            self.calls += 1
        answer = self.http.post(self.url, auth=self.auth,
                                data={"token": token, "token_type_hint": "access_token"})
        answer.raise_for_status()
        body: dict[str, object] = answer.json()
        return body

    def __call__(self, token: str) -> bool:
        now = self.clock()
        with self.lock:
            exp = self.active.get(token)
        if exp is not None and now < exp:
            return True
        body = self.ask(token)
        exp_claim = body.get("exp")
        if body.get("active") is not True or not isinstance(exp_claim, int | float):
            return False
        with self.lock:
            self.active = {t: e for t, e in self.active.items() if e > now}  # forget the dead
            self.active[token] = float(exp_claim)
        return now < exp_claim

    def forget(self) -> None:
        with self.lock:
            self.active.clear()
