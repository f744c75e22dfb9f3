"""Repository names as GitHub allows them, and the repository an issue belongs to (read by
the integration for a comment's parent, and by its webhooks for an item's API path)."""

from __future__ import annotations

import re
from typing import Any

import httpx

# owner/repo as GitHub allows them; nothing else reaches a path (no '..', no '/', no '?').
_NAME = r"[A-Za-z0-9_.-]*[A-Za-z0-9_-][A-Za-z0-9_.-]*"
_REPOSITORY = re.compile(rf"/repos/({_NAME}/{_NAME})/?$")


def repository_of(issue: Any) -> str | None:
    """``owner/repo`` of an issue, from its ``repository_url`` (None when it has none)."""
    url = issue.get("repository_url") if isinstance(issue, dict) else None
    try:
        found = _REPOSITORY.search(httpx.URL(url).path) if isinstance(url, str) else None
    except (httpx.InvalidURL, ValueError):
        return None
    return found[1] if found else None
