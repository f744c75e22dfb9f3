"""Deletion tombstones: items an API lists to say that an item is gone.

An API's incremental read (``since=…``) cannot leave a deleted item out: the reader would
never learn it is gone. Many list it instead as a tombstone, ``{"id": 7, "deleted": true}``.
A kind's ``deleted`` is a jq expression on the raw item, true for such an item
(``deleted = '.deleted == true'``): its identifier's row is deleted, and the item is never
stored as data. The expression runs in Python where it is of the usual shapes
(``integrations.jqsubset``), else through jq, compiled once.

    tombstones = Tombstones('.deleted == true')
    tombstones.marks([{"id": 1}, {"id": 2, "deleted": True}])   # [False, True]

An item the expression fails on (jq raises: ``.deleted`` of a string) is no tombstone: it
goes the way of every item (and is rejected there if it has no identifier).
"""

from __future__ import annotations

from typing import Any

import jq

from integrations.jqsubset import NotHere, compile_subset


def checked(expression: str) -> str:
    """``expression`` when jq compiles it. Raises ValueError with jq's message (a settings
    validator: ``sluice check`` names the key)."""
    try:
        jq.compile(expression)
    except ValueError as exc:
        raise ValueError(f"{expression!r} is not valid jq: {' '.join(str(exc).split())}"
                         ) from None
    return expression


class Tombstones:
    """A kind's ``deleted`` expression, compiled once. Raises ValueError for one jq does not
    compile."""

    def __init__(self, expression: str) -> None:
        self.expression = expression
        self.jq = jq.compile(checked(expression))
        self.python = compile_subset(expression)  # None: jq runs it

    def __call__(self, item: Any) -> bool:
        """The item says it is deleted (the expression's first output is neither null nor
        false); False too when the expression fails on it."""
        try:
            if self.python is None:
                raise NotHere
            value = self.python(item)
        except NotHere:
            try:
                value = self.jq.input_value(item).first()
            except (ValueError, StopIteration):
                return False
        return value is not None and value is not False

    def marks(self, items: list[Any]) -> list[bool]:
        """Which of ``items`` are tombstones, in order."""
        return [self(item) for item in items]
