"""The Celery side of Sluice. ``celery -A tasks worker`` finds the app as ``tasks.app``.

The app is built on first access, not on import, so that importing ``tasks.config`` or
``tasks.runs.progress`` (the CLI does) neither reads ``SLUICE_REDIS_URL`` nor builds a Celery app
before ``sluice standalone`` has started its Redis.
"""

from typing import Any

import integrations  # noqa: F401  (first: httpx without its command line, integrations/lean.py)


def __getattr__(name: str) -> Any:
    if name == "app":
        from tasks.app import app

        return app
    raise AttributeError(f"module 'tasks' has no attribute {name!r}")
