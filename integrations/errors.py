"""Sluice's one error tree. The exception decides what happens next.

    SluiceError
    ├── ConfigError                 bad sluice.toml / settings: names the file and the key path
    ├── RunLost                     the run's record is gone from Redis (lost its data)
    ├── RetryableError              try again later (with backoff); may carry ``retry_after``
    │   ├── TransientHTTPError      connect error, timeout, 429 or 5xx from the third-party API
    │   └── TargetUnavailable       the target is down, locked or answered 5xx/429
    └── PermanentError              retrying will not help
        ├── PermanentHTTPError      another 4xx from the third-party API (401, 404, 410, ...)
        ├── MalformedPage           a page that is not JSON, or lacks the configured items path
        └── TargetRejected          the target refused the batch (4xx, constraint violation)

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
    """The run's record disappeared from Redis; its producer stops."""


class RetryableError(SluiceError):
    """A transient failure. ``retry_after`` (seconds) is a hint from the other side, if any."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TransientHTTPError(RetryableError):
    """The third-party API failed in a way that may pass (after the client's own retries)."""


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


class TargetRejected(PermanentError):
    """The target refused the batch for good."""
