"""Pieces of sluice.toml that many integration modules write: a target, a REST source of the
fake API and its cursor-paged kinds. One place for them, so that a module's config shows only
what that module is about (its thresholds, mappings, children), and a change of the config
format is made once.

Every function returns finished TOML text (no ``str.format`` placeholders left); ``toml``
joins blocks with blank lines between them."""

from __future__ import annotations

from pathlib import Path

CURSOR = '{{ type = "cursor", cursor_path = "next_cursor", limit = {limit} }}'
SINCE = 'incremental = { cursor_path = "updated_at", param = "since" }'
SINCE_2M = 'incremental = { cursor_path = "updated_at", param = "since", lookback = "2m" }'
QUICK_RETRIES = "http = { retries = 1, backoff = 0.05, max_backoff = 0.1 }"


def toml(*blocks: str) -> str:
    """The blocks, each ending in one newline, a blank line between two."""
    return "\n" + "\n".join(block.strip("\n") + "\n" for block in blocks)


def sqlite_target(db: Path | str) -> str:
    return f'[target]\npath = "{db}"\n'


def postgres_target(dsn: str) -> str:
    return f'[target]\ntype = "postgres"\ndsn = "{dsn}"\n'


def rest_source(url: str, *lines: str, source: str = "api") -> str:
    """``[sources.SOURCE]`` of the REST integration at ``url``, with ``lines`` added."""
    return "\n".join([f"[sources.{source}]", 'integration = "rest"', f'base_url = "{url}"',
                      *lines]) + "\n"


def cursor_kind(kind: str, *lines: str, limit: int = 50, source: str = "api",
                path: str | None = None) -> str:
    """``[sources.SOURCE.kinds.KIND]`` read from the fake API's ``/cursor/KIND`` (or ``path``),
    ``limit`` a page, with ``lines`` added (an ``incremental``, a ``[...mapping]`` table...)."""
    return "\n".join([f"[sources.{source}.kinds.{kind}]", f'path = "{path or f"/cursor/{kind}"}"',
                      'items = "data"', f"paginator = {CURSOR.format(limit=limit)}",
                      *lines]) + "\n"


def comments_of(parent: str, *lines: str, source: str = "api") -> str:
    """A child kind ``comment`` of ``parent``: ``/sub/comment/{parent.id}``, 2 a page."""
    return "\n".join([f"[sources.{source}.kinds.comment]", f'parent = "{parent}"',
                      'path = "/sub/comment/{parent.id}"', 'items = "data"',
                      f"paginator = {CURSOR.format(limit=2)}", *lines]) + "\n"


def github_webhook_source(*, token_env: str, secret_env: str, kinds: list[str],
                          source: str = "gh") -> str:
    """``[sources.SOURCE]`` of the GitHub integration for org ``acme`` whose token and
    webhook secret come from the environment variables ``token_env`` and ``secret_env``."""
    names = ", ".join(f'"{kind}"' for kind in kinds)
    return "\n".join([f"[sources.{source}]", 'integration = "github"', 'org = "acme"',
                      f'token = "${{{token_env}}}"', f'webhook_secret = "${{{secret_env}}}"',
                      f"kinds = [{names}]"]) + "\n"


BEARER = 'headers = { Authorization = "Bearer ${SLUICE_TEST_TOKEN}" }'


def api_and_open(api_url: str, other_url: str, *, api_lines: tuple[str, ...] = (),
                 open_lines: tuple[str, ...] = ()) -> str:
    """Two REST sources of the one API, both with the bearer token of ``SLUICE_TEST_TOKEN``:
    ``api``, and ``open``, which may follow next URLs to ``other_url`` (``api_lines`` and
    ``open_lines`` add lines to each)."""
    return toml(rest_source(api_url, BEARER, *api_lines),
                rest_source(api_url, BEARER, f'allow_origins = ["{other_url}"]', *open_lines,
                            source="open"))


def offset_kind(kind: str, *, limit: int, source: str = "api") -> str:
    """``[sources.SOURCE.kinds.KIND]`` read from the fake API's ``/offset/KIND``, paged the
    way Jira pages (``startAt``, ``maxResults``, a ``total`` in the body)."""
    return "\n".join([f"[sources.{source}.kinds.{kind}]", f'path = "/offset/{kind}"',
                      'items = "values"', f"[sources.{source}.kinds.{kind}.paginator]",
                      'type = "offset"', 'offset_param = "startAt"',
                      'limit_param = "maxResults"', f"limit = {limit}",
                      'total_path = "total"']) + "\n"
