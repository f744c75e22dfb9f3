"""tasks.messages.batches: a page as batches of at most max_items items and about max_bytes of
JSON; a page that is one batch is encoded in one call, and its text is the one the item-by-item
cut gives (the run's items digest and every worker read the same)."""

from __future__ import annotations

import json
import random
from typing import Any

from integrations import jsontext, pager
from tasks.messages import batches
from tasks.runs.seqs import part_seq


def item_by_item(page: pager.Page, *, max_items: int, max_bytes: int
                 ) -> list[tuple[int, str, int]]:
    """The cut as it was written first: each item dumped alone, a batch closed before the item
    that would make it too many or too big."""
    out: list[tuple[int, str, int]] = []
    part: list[str] = []
    size = 0
    for item in page.items:
        text = jsontext.dumps(item)
        if part and (len(part) >= max_items or size + len(text) > max_bytes):
            out.append((part_seq(page.seq, len(out)), f"[{','.join(part)}]", len(part)))
            part, size = [], 0
        part.append(text)
        size += len(text) + 1
    if part:
        out.append((part_seq(page.seq, len(out)), f"[{','.join(part)}]", len(part)))
    return out


def test_batches_are_the_item_by_item_cut() -> None:
    rng = random.Random(5)
    for _ in range(3000):
        items: list[Any] = [{"id": i, "t": "é" * rng.randrange(20),
                             "s": rng.choice(["x", "\ud800", "yy", 2**70])}
                            for i in range(rng.randrange(12))]
        max_items, max_bytes = rng.randint(1, 14), rng.randint(5, 400)
        page = pager.Page(7, items, None)
        got = batches(page, max_items=max_items, max_bytes=max_bytes)
        assert [tuple(b) for b in got] == item_by_item(page, max_items=max_items,
                                                       max_bytes=max_bytes)
        assert [i for b in got for i in json.loads(b.items)] == items


def test_a_page_within_the_limits_is_one_batch_and_one_over_them_is_cut() -> None:
    items = [{"id": i, "title": "x" * 90} for i in range(10)]
    text = jsontext.dumps(items)
    page = pager.Page(3, items, None)
    assert [tuple(b) for b in batches(page, max_items=10, max_bytes=len(text) - 2)] == [
        (part_seq(3, 0), text, 10)]
    assert len(batches(page, max_items=10, max_bytes=len(text) - 3)) == 2
    assert [b.size for b in batches(page, max_items=4, max_bytes=10**6)] == [4, 4, 2]
    assert batches(pager.Page(3, [], None), max_items=10, max_bytes=100) == []
