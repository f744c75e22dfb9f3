"""Targets: where entities land. ``open_target`` builds one from the config's [target]."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tasks.config import HttpTarget as HttpSettings
from tasks.config import PostgresTarget as PostgresSettings
from tasks.config import SqliteTarget as SqliteSettings
from tasks.targets.base import Deletion, Entity, Target

if TYPE_CHECKING:
    from tasks.targets.http import Runner


def open_target(settings: SqliteSettings | PostgresSettings | HttpSettings, *,
                run: Runner | None = None) -> Target:
    """A connected target for the [target] section (one per worker process). ``run`` runs a
    coroutine on the process's event loop (the http target needs it)."""
    if isinstance(settings, SqliteSettings):
        from tasks.targets.sqlite import SqliteTarget

        return SqliteTarget(settings.path)
    if isinstance(settings, PostgresSettings):
        from tasks.targets.postgres import PostgresTarget

        return PostgresTarget(settings.dsn, table=settings.table)
    from tasks.targets.http import HttpTarget

    if run is None:
        raise TypeError("the http target runs its requests on an event loop: pass run=")
    return HttpTarget(settings.url, run=run, headers=settings.headers, timeout=settings.timeout,
                      deadline=settings.deadline)


__all__ = ["Deletion", "Entity", "Target", "open_target"]
