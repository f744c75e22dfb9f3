"""What fetching one page gives: its items and the state of the next (``Integration.fetch``,
built by the paginators)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

State = dict[str, Any]


@dataclass(frozen=True)
class Fetched:
    """One page: its items, the next page's state, and (when the API reveals how many pages
    there are) a plan of all the remaining ones."""

    items: list[Any]
    next: State | None
    plan: State | None = None
    # Why this page may not be the last though it ends the paging (a full page with no
    # link to the next one): the run then deletes nothing.
    truncated: str | None = None
    # How many items the API says the kind (or partition) holds, when it says so.
    total: int | None = None
