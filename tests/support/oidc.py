"""A real OAuth 2.0 authorization server for the auth tests: ``oidc-provider`` (npm) run by
``tests/support/oidc/server.mjs`` on a free loopback port.

    with OidcServer(log=tmp_path / "oidc.log", access_ttl=3) as oidc:
        oidc.token_url, oidc.CC.client_id, oidc.CC.client_secret
        rt = oidc.refresh_token()            # a fresh refresh token of RT, no person needed
        oidc.introspect(token)["active"]
        oidc.counts()["client_credentials"]  # token requests of that grant so far
        oidc.reused_refresh_tokens()         # refresh tokens presented more than once

Its packages are installed with ``npm ci`` the first time (node and npm must be on PATH: without
them the tests skip, and fail in CI; see tests/support/programs.py).
"""

from __future__ import annotations

import fcntl
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from integrations.fakeauth import Introspection
from tasks.operator.redisserver import free_port
from tasks.operator.supervisor import Child
from tests.support.programs import program
from tests.support.served import Served
from tests.support.workers import ROOT

HERE = ROOT / "tests" / "support" / "oidc"
REDIRECT = "http://127.0.0.1/callback"  # server.mjs registers it; never visited


@dataclass(frozen=True)
class OidcClient:
    client_id: str
    client_secret: str
    client_auth: str  # how it authenticates at the token endpoint: "basic" or "body"


def client(client_id: str, client_auth: str) -> OidcClient:
    return OidcClient(client_id, f"{client_id}-secret", client_auth)


def install() -> None:
    """``npm ci`` in tests/support/oidc unless its node_modules is there (once, under a lock,
    for test processes that start at once). Without node or npm the test skips (fails in CI);
    RuntimeError when ``npm ci`` fails."""
    for tool in ("node", "npm"):
        program(tool, purpose="the OAuth tests run the npm package oidc-provider (Node.js 20+)")
    with open(HERE / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (HERE / "node_modules" / "oidc-provider" / "package.json").exists():
            return
        done = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=HERE,
                              capture_output=True, text=True, timeout=600)
        if done.returncode:
            raise RuntimeError(f"npm ci in {HERE} failed:\n{done.stdout}\n{done.stderr}")


class OidcServer(Served):
    """oidc-provider on ``127.0.0.1:port`` (a free port unless given). Its clients:

    - ``CC`` (sluice-cc, client_secret_basic), ``CC_POST`` (sluice-cc-post,
      client_secret_post): client_credentials; scopes ``api:read``, ``api:write``
      (``api:admin`` is refused with invalid_scope); a ``resource`` or ``audience`` (an
      absolute URI) becomes the token's ``aud``.
    - ``RT`` (sluice-rt, basic), ``RT_POST`` (sluice-rt-post, body): authorization_code and
      refresh_token; refresh tokens rotate on every use, and a used one presented again fails
      with invalid_grant and revokes its grant (the newest refresh token and every access
      token of it too).
    - ``RS`` (sluice-rs): a resource server, for introspection.

    Each secret is ``<client_id>-secret``, and is taken only the registered way (HTTP basic,
    or ``client_id`` and ``client_secret`` in the form): the other way is invalid_client.

    Every access token lives ``access_ttl`` seconds (whole seconds: the server counts them).
    """

    CC = client("sluice-cc", "basic")
    CC_POST = client("sluice-cc-post", "body")
    RT = client("sluice-rt", "basic")
    RT_POST = client("sluice-rt-post", "body")
    RS = client("sluice-rs", "basic")

    def __init__(self, *, log: Path | None = None, access_ttl: int = 3,
                 refresh_ttl: int = 86400, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.issuer = self.url
        self.token_url = f"{self.url}/token"
        self.introspection_url = f"{self.url}/token/introspection"
        self.revocation_url = f"{self.url}/token/revocation"
        self.access_ttl = access_ttl
        self.child = Child("oidc-provider", ["node", str(HERE / "server.mjs"), str(self.port)],
                           log=log, cwd=HERE,
                           env={"OIDC_ACCESS_TOKEN_TTL": str(access_ttl),
                                "OIDC_REFRESH_TOKEN_TTL": str(refresh_ttl)})
        self.http = httpx.Client(base_url=self.url, timeout=10)

    def start(self) -> OidcServer:
        install()
        self.child.start()

        def up() -> bool:
            try:
                answer = self.http.get("/.well-known/openid-configuration")
            except httpx.TransportError:
                return False
            return answer.status_code == 200 and answer.json()["issuer"] == self.issuer

        self.child.wait_until(up, timeout=30)
        return self


    # --- the token endpoint, as a client would use it --------------------------------------

    def token(self, form: dict[str, str], who: OidcClient) -> httpx.Response:
        """POST ``form`` to the token endpoint as ``who`` (its own client authentication).
        Counted in the stats like any client's request."""
        if who.client_auth == "basic":
            return self.http.post("/token", data=form, auth=(who.client_id, who.client_secret))
        return self.http.post("/token", data={**form, "client_id": who.client_id,
                                              "client_secret": who.client_secret})

    def client_credentials(self, who: OidcClient | None = None, *, scope: str | None = None,
                           resource: str | None = None) -> dict[str, Any]:
        """A client-credentials token answer (access_token, expires_in, ...); HTTPStatusError
        when refused."""
        form = {"grant_type": "client_credentials"}
        form |= {"scope": scope} if scope else {}
        form |= {"resource": resource} if resource else {}
        answer = self.token(form, who or self.CC)
        answer.raise_for_status()
        body: dict[str, Any] = answer.json()
        return body

    def refresh(self, refresh_token: str, who: OidcClient | None = None) -> httpx.Response:
        """Present ``refresh_token`` once (the answer as it comes: 200 or 400 invalid_grant)."""
        return self.token({"grant_type": "refresh_token", "refresh_token": refresh_token},
                          who or self.RT)

    def refresh_token(self, who: OidcClient | None = None, *,
                      scope: str = "openid offline_access", login: str = "sluice-user"
                      ) -> str:
        """A new refresh token for ``who`` (RT by default), from the authorization-code flow
        driven through oidc-provider's development login and consent forms (a grant of its
        own each time). RuntimeError when the flow does not end in a code."""
        who = who or self.RT
        with httpx.Client(base_url=self.url, timeout=10) as browser:  # its own cookies
            where = browser.get("/auth", params={
                "client_id": who.client_id, "response_type": "code", "redirect_uri": REDIRECT,
                "scope": scope, "prompt": "consent", "state": "sluice-test"})
            for _ in range(8):  # login, consent, each followed by a resume
                location = where.headers.get("location", "")
                if location.startswith(REDIRECT):
                    return self.exchange(location, who)
                if where.status_code not in (302, 303) or not location:
                    break
                path = urlsplit(location).path
                if path.startswith("/interaction/"):
                    where = self.interact(browser, path, login)
                else:
                    where = browser.get(location)
        raise RuntimeError(f"the authorization-code flow did not end in a code: "
                           f"{where.status_code} {where.headers} {where.text[:500]}")

    @staticmethod
    def interact(browser: httpx.Client, path: str, login: str) -> httpx.Response:
        """Fill in the development form at ``path`` (login or consent) and submit it."""
        page = browser.get(path)
        found = re.search(r'name="prompt" value="(\w+)"', page.text)
        prompt = found.group(1) if found else ""
        if prompt == "login":
            return browser.post(path, data={"prompt": "login", "login": login,
                                            "password": "any"})
        if prompt == "consent":
            return browser.post(path, data={"prompt": "consent"})
        raise RuntimeError(f"unexpected interaction page at {path}: {page.text[:500]}")

    def exchange(self, location: str, who: OidcClient) -> str:
        """The refresh token the code in the redirect ``location`` is worth."""
        query = parse_qs(urlsplit(location).query)
        if "code" not in query:
            raise RuntimeError(f"the authorization was refused: {location}")
        answer = self.token({"grant_type": "authorization_code", "code": query["code"][0],
                             "redirect_uri": REDIRECT}, who)
        answer.raise_for_status()
        refresh: str = answer.json()["refresh_token"]
        return refresh

    # --- for resource servers and assertions ----------------------------------------------

    def introspect(self, token: str) -> dict[str, Any]:
        """RFC 7662's answer for ``token`` (asked as RS): ``active``, ``exp``, ``client_id``,
        ``scope``, ``aud``..."""
        answer = self.http.post("/token/introspection", data={"token": token},
                                auth=(self.RS.client_id, self.RS.client_secret))
        answer.raise_for_status()
        body: dict[str, Any] = answer.json()
        return body

    def introspection(self) -> Introspection:
        """A ``verify`` for the fake API's ``bearer`` check, asking this server as RS:
        ``FakeAPI(auth=bearer(oidc.introspection()))``."""
        return Introspection(self.introspection_url, self.RS.client_id, self.RS.client_secret)

    def revoke(self, token: str, who: OidcClient) -> None:
        """Revoke ``token`` (RFC 7009) as the client it was issued to: a refresh token
        takes its grant with it. (A fake API's ``Introspection`` still accepts an access
        token it has kept until ``forget()``.)"""
        form = {"token": token}
        if who.client_auth == "basic":
            answer = self.http.post("/token/revocation", data=form,
                                    auth=(who.client_id, who.client_secret))
        else:
            answer = self.http.post("/token/revocation", data={
                **form, "client_id": who.client_id, "client_secret": who.client_secret})
        answer.raise_for_status()

    def stats(self) -> dict[str, Any]:
        """``counts`` (token requests per grant type), ``reused_refresh_tokens`` and
        ``requests``: every token request so far, each with ``t`` (epoch seconds),
        ``grant_type``, ``client_id``, ``client_auth`` (basic, body, none), ``scope``,
        ``resource``, ``audience``, ``status``, ``error``, ``error_description``,
        ``error_detail`` (oidc-provider's own reason: "refresh token already used"),
        ``expires_in``, and ``refresh_token`` / ``issued_refresh_token`` (the first 16 hex
        digits of the SHA-256 of the one presented and of the one issued)."""
        stats: dict[str, Any] = self.http.get("/_admin/stats").raise_for_status().json()
        return stats

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = self.stats()["counts"]
        return counts

    def requests(self, grant_type: str | None = None) -> list[dict[str, Any]]:
        return [r for r in self.stats()["requests"]
                if grant_type is None or r["grant_type"] == grant_type]

    def reused_refresh_tokens(self) -> list[str]:
        """The (hashed) refresh tokens presented more than once: empty when every one was
        presented once at most."""
        reused: list[str] = self.stats()["reused_refresh_tokens"]
        return reused

    def reset_stats(self) -> None:
        self.http.delete("/_admin/stats").raise_for_status()

    def token_faults(self, *, times: int = 1, status: int = 0,
                     error: str = "temporarily_unavailable", delay: float = 0.0) -> None:
        """The next ``times`` token requests wait ``delay`` seconds, then (with a ``status``)
        are answered ``{"error": error}`` with that status instead of a token."""
        self.http.post("/_admin/token_faults", json={
            "times": times, "status": status, "error": error, "delay": delay,
        }).raise_for_status()
