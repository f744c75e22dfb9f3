"""A rejected item's record, the same from every task (``sluice failed list`` shows them)."""

from __future__ import annotations

from typing import Any

from integrations.secrets import excerpt


def rejection(seq: int, index: int, item: Any, reason: str) -> dict[str, Any]:
    """What is kept of a rejected item: where it was, why, and the start of it."""
    return {"seq": seq, "index": index, "reason": reason, "item": excerpt(repr(item), 200)}
