"""The one task boundary: every task runs its body inside ``Guard``, which decides what an
exception that escapes it means.

    RetryableError, retries left     -> ``task.retry`` after ``delay()``: the hint of the API
                                        (its Retry-After, which ``integrations.http.retry``
                                        hands back when it is too long to wait in a request)
                                        or of the target, capped at ``ingest_max_backoff``;
                                        else the backoff of ``Settings`` for this attempt
    RetryableError past its retries,
    any other exception (a Sluice
    error, a bug, JSON too deep)     -> swallowed: ``guard.error`` holds it, and the task
                                        gives up its own way (a ``DeadLetter`` of its items,
                                        a failed run) with ``guard.letter()`` / ``guard.why``

The error tree (``integrations.errors``) is what classifies: nothing here, nor in a task,
asks anything else of an exception. After the ``with``, ``guard.error`` says which way it
went::

    with Guard(self, rt.settings, retries=rt.settings.ingest_retries) as guard:
        written = write(...)
    if guard.error is None:
        return done(written)
    letter = guard.letter("batch", source, kind, items, seq=seq)
"""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any

from celery import Task

from integrations.errors import RetryableError, describe
from integrations.http.retry import backoff
from tasks.runs.deadletter import DeadLetter
from tasks.runs.deadletter import Task as TaskName
from tasks.settings import Settings


def delay(settings: Settings, exc: RetryableError, attempt: int) -> float:
    """Seconds before retry number ``attempt`` (0-based): the hint the exception carries (the
    API's Retry-After, the target's), at most ``ingest_max_backoff``; else the backoff."""
    if exc.retry_after is not None:
        return min(settings.ingest_max_backoff, exc.retry_after)
    return backoff(attempt, base=settings.ingest_backoff, cap=settings.ingest_max_backoff)


class Guard:
    """Around a task's body: retry what may pass (``retries`` times), keep anything else in
    ``error``. ``task`` None (a producer's window, run in a thread of its task): never
    retried."""

    def __init__(self, task: Task | None, settings: Settings, *, retries: int) -> None:
        self.task, self.settings, self.retries = task, settings, retries
        self.attempt = task.request.retries if task is not None else 0  # 0: the first try
        self.error: Exception | None = None

    def __enter__(self) -> Guard:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        if not isinstance(exc, Exception):  # none, or KeyboardInterrupt, SystemExit
            return False
        if (isinstance(exc, RetryableError) and self.task is not None
                and self.attempt < self.retries):
            raise self.task.retry(exc=exc, countdown=delay(self.settings, exc, self.attempt))
        self.error = exc
        return True

    @property
    def attempts(self) -> int:
        """Tries made, this one included."""
        return self.attempt + 1

    @property
    def exhausted(self) -> bool:
        """It gave up on an error that might have passed: its retries ran out."""
        return isinstance(self.error, RetryableError)

    @property
    def why(self) -> str:
        """The error's type, message and place (``describe``)."""
        assert self.error is not None, "the body finished"
        return describe(self.error)

    def letter(self, task: TaskName, source: str, kind: str, items: Any, *,
               seq: int | None = None, root: str | None = None) -> DeadLetter:
        """The dead letter of what the body could not do."""
        return DeadLetter(task=task, source=source, kind=kind, items=items, error=self.why,
                          attempts=self.attempts, at=time.time(), seq=seq, root=root)
