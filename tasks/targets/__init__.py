"""Targets: where entities land. ``open_target`` builds one from the config's [target]."""

from __future__ import annotations

from tasks.config import HttpTarget as HttpSettings
from tasks.config import PostgresTarget as PostgresSettings
from tasks.config import SqliteTarget as SqliteSettings
from tasks.targets.base import Deletion, Entity, Target


def open_target(settings: SqliteSettings | PostgresSettings | HttpSettings) -> Target:
    """A connected target for the [target] section (one per worker process)."""
    if isinstance(settings, SqliteSettings):
        from tasks.targets.sqlite import SqliteTarget

        return SqliteTarget(settings.path)
    if isinstance(settings, PostgresSettings):
        from tasks.targets.postgres import PostgresTarget

        return PostgresTarget(settings.dsn, table=settings.table)
    from tasks.targets.http import HttpTarget

    return HttpTarget(settings.url, headers=settings.headers, timeout=settings.timeout)


__all__ = ["Deletion", "Entity", "Target", "open_target"]
