"""A REST source's ``auth`` section: how its requests prove who they are.

    auth = { type = "bearer", token = "${TOKEN}" }
    auth = { type = "basic", username = "bot", password = "${PASSWORD}" }
    auth = { type = "api_key", name = "X-API-Key", value = "${KEY}", location = "header" }
    auth = { type = "oauth2_client_credentials", token_url = "…", client_id = "…",
             client_secret = "${SECRET}", scopes = ["…"], audience = "…", client_auth = "basic" }
    auth = { type = "oauth2_refresh_token", token_url = "…", client_id = "…",
             client_secret = "${SECRET}", refresh_token = "${REFRESH_TOKEN}" }

``credentials(auth)`` turns a section into what ``make_client`` takes: headers, an
``httpx.Auth`` and secret query parameters. Every one of them goes only to the source's own
origins (``integrations.http.origin``). The OAuth 2.0 types get their tokens from
``integrations.http.oauth``, shared by every process through a ``TokenStore``.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from typing import Annotated, Literal

import httpx
from pydantic import AfterValidator, Field, model_validator

from integrations.settings import StrictModel


def _matching(pattern: str, what: str) -> AfterValidator:
    """A check that a value is ``what`` (a line break in a header value would end it, and
    httpx would fail every request with the value in its error)."""
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise ValueError(f"must be {what}")
        return value

    return AfterValidator(check)


_TCHARS = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# RFC 9110 field-value without line breaks or other control characters; RFC 6750 b64token
# (and the other printable ASCII some APIs use); RFC 9110 token (a header's name).
HeaderValue = Annotated[str, _matching(r"[\x21-\x7e]([\x20-\x7e\t]*[\x21-\x7e])?",
                                       "printable ASCII without line breaks or control "
                                       "characters, not starting or ending with a space")]
Token68 = Annotated[str, _matching(r"[\x21-\x7e]+", "printable ASCII without spaces")]
NoControl = Annotated[str, _matching(r"[^\x00-\x1f\x7f]*", "free of control characters")]
UserId = Annotated[str, _matching(r"[^:\x00-\x1f\x7f]+",
                                  "free of ':' and control characters (RFC 7617)")]


class BearerAuth(StrictModel):
    type: Literal["bearer"]
    token: Token68 = Field(min_length=1, description="sent as 'Authorization: Bearer TOKEN'")


class BasicAuth(StrictModel):
    type: Literal["basic"]
    username: UserId = Field(min_length=1)
    password: NoControl = Field("", description="write it as '${ENV_VAR}'")


class ApiKeyAuth(StrictModel):
    type: Literal["api_key"]
    name: Token68 = Field(min_length=1, description="the header or query parameter: X-API-Key")
    value: HeaderValue = Field(min_length=1, description="write it as '${ENV_VAR}'")
    location: Literal["header", "query"] = Field(
        "header", description="query: the key is redacted from every URL logged or stored")

    @model_validator(mode="after")
    def _a_header_name(self) -> ApiKeyAuth:
        if self.location == "header" and not _TCHARS.fullmatch(self.name):
            raise ValueError(f"name {self.name!r} is not a header name (RFC 9110 token)")
        return self


class OAuth2Base(StrictModel):
    token_url: Annotated[str, _matching(r"https?://[^\s/?#]+\S*", "an absolute http(s) URL")] = (
        Field(min_length=1, description="the provider's token endpoint"))
    client_id: str = Field(min_length=1)
    client_secret: str | None = Field(None, description="write it as '${ENV_VAR}'")
    client_auth: Literal["basic", "body"] = Field(
        "basic", description="basic: the client in an Authorization header (RFC 6749 2.3.1's "
        "default); body: client_id and client_secret in the form")
    scopes: list[str] = Field(default_factory=list, description="asked for, space-separated")
    audience: str | None = Field(None, description="sent as 'audience' (Auth0, Okta)")
    expiry_margin: float = Field(
        60.0, ge=0, description="seconds before expires_in runs out that a token is renewed "
        "(at most a tenth of its lifetime)")


class OAuth2ClientCredentials(OAuth2Base):
    type: Literal["oauth2_client_credentials"]


class OAuth2RefreshToken(OAuth2Base):
    type: Literal["oauth2_refresh_token"]
    refresh_token: str = Field(
        min_length=1, description="the first refresh token ('${ENV_VAR}'); the rotated ones are "
        "kept, encrypted with SLUICE_SECRET_KEY, in the target's state table")


OAuth2Settings = OAuth2ClientCredentials | OAuth2RefreshToken

AuthSettings = Annotated[
    BearerAuth | BasicAuth | ApiKeyAuth | OAuth2ClientCredentials | OAuth2RefreshToken,
    Field(discriminator="type"),
]


@dataclass
class Credentials:
    """What a client sends to the source's origins."""

    headers: dict[str, str] = field(default_factory=dict)
    auth: httpx.Auth | None = None
    params: dict[str, str] = field(default_factory=dict)  # secret query parameters


class QueryKey(httpx.Auth):
    """An API key in the query string, set on every request (a next URL may carry it
    masked as ``***``, as checkpoints store it; the origin guard then puts it back)."""

    def __init__(self, name: str, value: str) -> None:
        self.name, self.value = name, value

    def auth_flow(self, request: httpx.Request):  # type: ignore[no-untyped-def]
        request.url = request.url.copy_set_param(self.name, self.value)
        yield request


def basic_header(username: str, password: str) -> str:
    """``Basic base64(username:password)`` (RFC 7617, UTF-8)."""
    raw = f"{username}:{password}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


def simple_credentials(auth: BearerAuth | BasicAuth | ApiKeyAuth) -> Credentials:
    """The headers or query parameter of the types that need no token endpoint."""
    if isinstance(auth, BearerAuth):
        return Credentials(headers={"Authorization": f"Bearer {auth.token}"})
    if isinstance(auth, BasicAuth):
        return Credentials(headers={"Authorization": basic_header(auth.username,
                                                                  auth.password)})
    if auth.location == "header":
        return Credentials(headers={auth.name: auth.value})
    return Credentials(auth=QueryKey(auth.name, auth.value), params={auth.name: auth.value})
