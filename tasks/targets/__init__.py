"""Targets: where entities land. ``open_target`` builds one from the config's [target]."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tasks.config import HttpConfig, PostgresConfig, SqliteConfig
from tasks.targets.base import Deletion, Entity, Target

if TYPE_CHECKING:
    from tasks.targets.http import Runner


def open_target(settings: SqliteConfig | PostgresConfig | HttpConfig, *,
                run: Runner | None = None) -> Target:
    """A connected target for the [target] section (one per worker process). ``run`` runs a
    coroutine on the process's event loop (the http target needs it)."""
    if isinstance(settings, SqliteConfig):
        from tasks.targets.sqlite import SqliteTarget

        return SqliteTarget(settings.path)
    if isinstance(settings, PostgresConfig):
        from tasks.targets.postgres import PostgresTarget

        return PostgresTarget(settings.dsn, table=settings.table)
    from tasks.targets.http import HttpTarget

    if run is None:
        raise TypeError("the http target runs its requests on an event loop: pass run=")
    return HttpTarget(settings.url, run=run, headers=settings.headers, timeout=settings.timeout,
                      deadline=settings.deadline)


__all__ = ["Deletion", "Entity", "Target", "open_target"]
