"""The write stage: what every task that writes items shares (the batch task, the children's
batches through it, webhook batches) and what ``sluice preview`` shows of it.

    landing.py     where a (source, kind) lands, decided once: its typed table (a mapping
                   on a target with tables) or ``entities``; writes and deletes go there
    entities.py    items -> entities (the last item of an identifier wins), upserted
    mapped.py      items -> typed rows (the mapping, values fitted to their columns), upserted
    tombstones.py  a batch's tombstones split out, their rows deleted after its upserts
    rejections.py  what is kept of a rejected item: where it was, why, the start of it

The stage tasks (``tasks/resync``, ``slicing``, ``ingest``, ``children``, ``finalize``,
``webhook``) import this package and none of each other (tests/unit/test_imports.py).
"""
