"""Sluice's one error tree. The exception decides what happens next.

    SluiceError
    ├── ConfigError                 bad sluice.toml / settings: names the file and the key path
    ├── RunLost                     the run's record is gone from Redis (lost its data), or
    │                               was kept by a Redis server since restarted or failed over
    ├── RetryableError              try again later (with backoff); may carry ``retry_after``
    │   ├── TransientHTTPError      connect error, timeout, 429 or 5xx from the third-party API
    │   │   └── RateLimited         a GraphQL answer (HTTP 200) whose error is a rate limit
    │   └── TargetUnavailable       the target is down, locked or answered 5xx/429
    └── PermanentError              retrying will not help
        ├── PermanentHTTPError      another 4xx from the third-party API (401, 404, 410, ...)
        ├── MalformedPage           a page that is not JSON, or lacks the configured items path
        │   ├── PagingCycle         a cursor or next link (or a page's items) came back in a run
        │   ├── GraphQLError        a GraphQL answer (HTTP 200) with errors: the first's message
        │   └── NoParentValue       a parent item lacks what its children's path needs
        ├── TooManyPages            a run read more than the source's max_pages
        ├── ForeignOrigin           a next link or redirect to an origin not allowed
        ├── AuthRefused             the token endpoint refused the credentials (invalid_grant)
        ├── WebhookRefused          a webhook delivery not signed right, or not understood
        └── TargetRejected          the target refused the batch (4xx, constraint violation)

Anything else that escapes a task (a bug, a ``RecursionError``) is caught at the task's
boundary and recorded with ``describe()``: its type, message and where it was raised.

Third-party errors (httpx, sqlite3, psycopg) are translated into this tree where they enter,
so tasks only ever ask ``isinstance(exc, RetryableError)``.

It lives in ``integrations`` because integrations must not import the Celery side, while the
Celery side (``tasks``) imports integrations.
"""

from __future__ import annotations


class SluiceError(Exception):
    """Root of every error Sluice raises on purpose."""


class ConfigError(SluiceError):
    """The configuration is invalid. The message names the file and the key path."""


class RunLost(SluiceError):
    """The run's record disappeared from Redis, or the run was started on another Redis
    server (restarted or failed over since: the record may have lost writes); its producer
    stops."""


class RetryableError(SluiceError):
    """A transient failure. ``retry_after`` (seconds) is a hint from the other side, if any."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TransientHTTPError(RetryableError):
    """The third-party API failed in a way that may pass (after the client's own retries)."""


class RateLimited(TransientHTTPError):
    """A GraphQL answer whose error says "too many requests" (GitHub's RATE_LIMITED), with the
    wait its rate-limit headers ask for in ``retry_after``, if any."""


class TargetUnavailable(RetryableError):
    """The target could not take the batch now."""


class PermanentError(SluiceError):
    """A failure that retrying will not fix."""


class PermanentHTTPError(PermanentError):
    """The third-party API answered a 4xx other than 429."""

    def __init__(self, message: str, *, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


class MalformedPage(PermanentError):
    """A page whose body is not JSON or does not hold the configured items."""


class PagingCycle(MalformedPage):
    """The API sent a cursor or next link that this run already followed: paging would
    never end."""


class GraphQLError(MalformedPage):
    """A GraphQL answer with ``errors`` (the server's HTTP status is 200): the message names
    the first error's message and path; ``errors`` holds them all, as the server sent them.
    A rate-limit error is RateLimited instead (``integrations.http.graphql``)."""

    def __init__(self, message: str, *, errors: list[object]) -> None:
        super().__init__(message)
        self.errors = errors


class NoParentValue(MalformedPage):
    """A parent item lacks a value its children's path or parameters need: that parent is
    rejected with the reason, its siblings are fetched."""


class TooManyPages(PermanentError):
    """A run read more pages than the source's ``max_pages``: an API that never stops."""


class ForeignOrigin(PermanentError):
    """A request (a next link, a planned page, a redirect) to an origin other than the
    source's own, and not in its ``allow_origins``."""


class AuthRefused(PermanentError):
    """An OAuth 2.0 token endpoint refused the source's credentials (``invalid_client``,
    ``invalid_grant``), or a refresh token could not be presented safely: the run fails with
    the reason once; retrying would only ask again."""


class WebhookRefused(PermanentError):
    """A webhook delivery that is refused: ``status`` is the HTTP answer (401: a missing or
    wrong signature; 400: a body that is not the JSON the integration expects)."""

    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class TargetRejected(PermanentError):
    """The target refused the batch for good."""


def describe(exc: BaseException, *, limit: int = 500) -> str:
    """``Type: message (at file.py:12 in func)``: what a run or a dead letter records about
    an exception, the frame being the innermost one of the traceback."""
    from integrations.secrets import excerpt

    text = excerpt(f"{type(exc).__name__}: {exc}", limit)
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is not None:
        code = tb.tb_frame.f_code
        text += f" (at {code.co_filename.rsplit('/', 1)[-1]}:{tb.tb_lineno} in {code.co_name})"
    return text
