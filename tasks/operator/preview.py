"""``sluice preview SOURCE KIND``: the first page of a kind, mapped, printed; nothing written.

The loop a user runs while writing a mapping: it fetches one page (of the first partition, or
of the first parent's children), applies the kind's mapping as the batch task would (the same
``tasks.write.mapped``), and prints the columns with their types, the rows it would write,
and the items it would reject with why. Without a mapping it prints the items as they would
land in ``entities``.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import Any

from integrations.base import Integration
from integrations.errors import ConfigError
from integrations.http.auth import OAuth2ClientCredentials, OAuth2RefreshToken
from integrations.http.oauth import TokenStore
from integrations.registry import load
from tasks.config import HttpConfig, SluiceConfig
from tasks.runs.client import connect_redis
from tasks.settings import get_settings
from tasks.targets import open_target
from tasks.worker.tokens import RedisTokenStore
from tasks.write.mapped import fitted


async def first_page(integration: Integration, kind: str, redactor: Any, *,
                     tokens: TokenStore | None = None, secret_key: str | None = None
                     ) -> list[Any]:
    """The first page of ``kind``: of its first partition, or the children of its first
    parent (of the parent's first partition: GitHub's issue_comment, of a repository's
    first issue). ``tokens``: the fleet's OAuth 2.0 tokens (a refresh token is never
    presented beside the workers')."""
    client = integration.client(redactor=redactor, tokens=tokens, secret_key=secret_key)
    try:
        parent = integration.parent(kind)
        key: Any = None
        if parent is not None:  # of the first partition of the parent, when it has them
            keys = await integration.partition_keys(parent, client)
            if keys is not None and not keys:
                return []
            parents = (await integration.fetch(parent, client, None,
                                               key=keys[0] if keys else None)).items
            if not parents:
                return []
            key = integration.parent_ref(parent, parents[0])
        else:
            keys = await integration.partition_keys(kind, client)
            if keys is not None:
                if not keys:
                    return []
                key = keys[0]
        page = await integration.fetch(kind, client, None, key=key)
        if parent is not None:
            return [integration.with_parent(kind, key, item) for item in page.items]
        return page.items
    finally:
        await client.aclose()


def fleet_tokens(config: SluiceConfig, source: str) -> dict[str, Any]:
    """The workers' token store and key, for a source whose auth gets OAuth 2.0 tokens:
    preview shares their token (and their refresh token chain) instead of asking for its own."""
    if not isinstance(getattr(config.source(source), "auth", None),
                      (OAuth2ClientCredentials, OAuth2RefreshToken)):
        return {}
    settings = get_settings()
    target = open_target(config.target) if not isinstance(config.target, HttpConfig) else None
    return {"tokens": RedisTokenStore(connect_redis(settings.redis_url), source,
                                      target=None if target is None else lambda: target),
            "secret_key": settings.secret_key.get_secret_value() if settings.secret_key
            else None}


def _iso(value: Any) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def preview(config: SluiceConfig, source: str, kind: str, *, limit: int) -> list[str]:
    """The lines ``sluice preview`` prints."""
    integration = load(config.source(source))
    if kind not in integration.kinds():
        raise ConfigError(f"{config.path}: source {source!r} has no kind {kind!r} "
                          f"(kinds: {', '.join(integration.kinds())})")
    items = asyncio.run(first_page(integration, kind, config.redactor,
                                   **fleet_tokens(config, source)))
    mapping = integration.mapping(kind)
    if mapping is None:
        lines = [f"{source}/{kind}: {len(items)} items on the first page; no mapping: they "
                 "land whole in entities"]
        for item in items[:limit]:
            lines.append(json.dumps({"identifier": integration.identifier(kind, item),
                                     "data": item}, default=str))
        return lines
    mapped = mapping.map(items)
    columns, misfits, fit, _ = fitted(mapping, {}, mapped.rows)  # as a batch fits them
    rows = [{"identifier": i, **row["values"]} for i, row in fit.items()]
    rejected = [(i, why) for i, _, why in mapped.rejected] + misfits
    lines = [f"{source}/{kind}: {len(items)} items on the first page -> {len(rows)} rows into "
             f"{mapping.table(source)}, {len(rejected)} rejected, {mapped.skipped} "
             "skipped by the selector (nothing is written)",
             "columns: identifier, " + ", ".join(f"{n} ({t})" for n, t in columns.items())]
    lines += [json.dumps(row, default=_iso) for row in rows[:limit]]
    lines += [f"rejected item {index}: {why}" for index, why in sorted(rejected)]
    return lines
