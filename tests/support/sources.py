"""A sluice.toml with many sources (tests of scale: config, beat, a worker's laziness)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path


def every_or_cron(i: int) -> str:
    """Half ``every`` (10 s to 60 s), half cron (every 1 to 5 minutes)."""
    return (f'every = "{10 + (i * 7) % 51}s"' if i % 2 == 0
            else f'schedule = "*/{(1, 2, 3, 5)[(i // 2) % 4]} * * * *"')


def many_sources(path: Path, api_url: str, n: int, *,
                 schedule: Callable[[int], str] = every_or_cron,
                 extra: Callable[[int], str] = lambda i: "") -> Path:
    """``n`` REST sources ``src000``... of one cursor-paged kind ``item`` of the fake API at
    ``api_url``, each with ``schedule(i)`` and ``extra(i)`` lines; a SQLite target beside."""
    parts = [f'[target]\npath = "{path.parent / "db.sqlite"}"\n']
    for i in range(n):
        parts.append(f"""
[sources.src{i:03d}]
integration = "rest"
base_url = "{api_url}"
{schedule(i)}
{extra(i)}

[sources.src{i:03d}.kinds.item]
path = "/cursor/item"
items = "data"
paginator = {{ type = "cursor", cursor_path = "next_cursor", limit = 50 }}
""")
    path.write_text("".join(parts))
    return path
