"""Dot paths into decoded JSON (``"data.items"``): where an API's items, ids, cursors and
next links are. Every reader of a page, a webhook event or a parent item digs the same way."""

from __future__ import annotations

from typing import Any


def dig(body: Any, path: str | None) -> Any:
    """Follow a dot path (``"data.items"``) into a decoded JSON body; None when it is absent.

    A key may itself hold dots (``"@odata.nextLink"``, ``"links.next"`` as one key): where a
    part is not a key, it is tried joined with the parts after it (``"@odata"`` then
    ``"@odata.nextLink"``), so a path that resolved part by part resolves as it always did."""
    if not path:
        return body
    if type(body) is dict and "." not in path:  # the usual identifier ("id"), once per item
        return body.get(path)
    node = body
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            if "." not in path:
                return None
            found = _dig_joined(body, path.split("."))
            return None if found is _ABSENT else found
    return node


_ABSENT = object()


def _dig_joined(node: Any, parts: list[str]) -> Any:
    """``dig`` of ``parts`` (not empty) where a key may span several of them: the shortest
    key first, then longer ones when the rest of the path does not resolve under it.
    ``_ABSENT`` when nothing does."""
    for end in range(1, len(parts) + 1):
        key = ".".join(parts[:end])
        if isinstance(node, dict) and key in node:
            child = node[key]
        elif isinstance(node, list) and end == 1 and key.isdigit() and int(key) < len(node):
            child = node[int(key)]
        else:
            continue
        found = _dig_joined(child, parts[end:]) if end < len(parts) else child
        if found is not _ABSENT:
            return found
    return _ABSENT
