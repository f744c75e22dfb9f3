"""A batch's message decoded once in a worker node, not twice.

Celery's consumer (the main thread) decodes every task's body to build its request (its
args, kwargs and embedded options), then hands the pool the body as it came, and the pool
decodes it again before the task runs: for a 500-item batch, 430 KB of JSON decoded twice.
When the pool runs tasks in this process (the threads pool, which is Sluice's default, or
solo), the task is handed the consumer's decoded payload instead, as Celery itself does for a
message of its older protocols. The content type was checked when the consumer decoded it
(JSON only). A prefork pool still gets the body as it came: the parent would pickle the
decoded payload to the child, and a payload nested deep enough makes that raise there.
"""

from __future__ import annotations

from typing import Any

from celery.worker.request import Request

# Set when the worker node is ready and its pool runs tasks in this process (tasks/app.py).
IN_PROCESS = False


class DecodedOnce(Request):  # type: ignore[misc]  # Celery's classes are untyped
    """Celery's request, whose body is the payload the consumer decoded (in process)."""

    def __init__(self, message: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(message, *args, **kwargs)
        if IN_PROCESS and not getattr(self, "_decoded", True):
            self._body = self._Request__payload  # (args, kwargs, embed), as decoded
            self._decoded = True
            self._content_type = self._content_encoding = None
