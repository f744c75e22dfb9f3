"""The time windows of a sliced run, on its record in Redis (``integrations.slices``).

Each window is a partition of the run: field ``window:{i}`` (``keys.window_field``) holds its
bounds ``[a, b]`` and ``since:{i}`` is null (its bounds say what it reads); ``span`` is what
they cover together. ``windows_next`` is the next partition to start: ``claim`` hands out
partitions while fewer than the limit are started and not done, so at most that many windows
are read at once across the fleet; a window split into pieces (``split``) keeps the first and
adds a partition for each other piece after every other, claimed like the rest;
``windows_split`` counts the windows split (once each, whatever the pieces). A claimed window
is read by the task it was claimed for, or by that task's continuation: the message names it.
"""

from __future__ import annotations

import json
from itertools import pairwise
from typing import Any, NamedTuple, cast

import redis

from integrations.slices import MAX_WINDOWS, Window
from tasks.runs import keys, scripts

GONE, FULL, MOVED = -1, -2, -3  # why Windows.split changed nothing


class Split(NamedTuple):
    """What ``Windows.split`` did: the new partitions are ``first`` to ``first + added - 1``;
    ``first`` is GONE (the run record is gone), FULL (the run has MAX_WINDOWS windows) or
    MOVED (the partition's window is not the one split) when nothing changed."""

    first: int
    added: int


class Windows:
    """The windows of the runs of one Redis database."""

    def __init__(self, client: redis.Redis) -> None:
        self.r = client
        self._claim = scripts.register(client, "claim_windows")
        self._split = scripts.register(client, "split_window")

    def cut(self, run_id: str, windows: list[Window], *, incremental: bool) -> None:
        """The run reads these windows (at least one), partition i the i-th, none started
        yet. ``incremental``: they cover what changed since the watermark (the run then
        deletes nothing)."""
        fields: dict[str, str] = {"partitions": str(len(windows)), "windows_next": "0",
                                  "span": json.dumps([windows[0][0], windows[-1][1]])}
        for i, window in enumerate(windows):
            fields[keys.window_field(i)] = json.dumps(window)
            fields[keys.since_field(i)] = "null"
        if incremental:
            fields["incremental"] = "1"
        self.r.hset(keys.run(run_id), mapping=cast(Any, fields))

    def span(self, run_id: str) -> Window | None:
        """[lo, hi) the run's windows cover; None when it was not cut into any."""
        raw = self.r.hget(keys.run(run_id), "span")
        return None if raw is None else cast(Window, json.loads(raw))

    def get(self, run_id: str, partition: int) -> Window | None:
        """The window partition ``partition`` reads; None when the run is not sliced."""
        raw = self.r.hget(keys.run(run_id), keys.window_field(partition))
        return None if raw is None else cast(Window, json.loads(raw))

    def claim(self, run_id: str, limit: int, *, most: int) -> list[int]:
        """The partitions the caller starts now, at most ``most`` of them, while fewer than
        ``limit`` are started and not done (none once the producer is done)."""
        got = self._claim(keys=[keys.run(run_id), keys.run_partitions_done(run_id)],
                          args=[limit, most])
        return [int(i) for i in got]

    def split(self, run_id: str, partition: int, pieces: list[Window]) -> Split:
        """Partition ``partition`` reads ``pieces[0]`` now; a new partition (numbered after
        every other) reads each other piece. With room for fewer than that (MAX_WINDOWS), as
        many as fit are added, and the last one added reaches to the window's end; with no
        room (FULL), the window stays whole. The pieces must cover the partition's window
        (``[pieces[0][0], pieces[-1][1]]``) in order: when it is no longer that (MOVED: another
        reader of the partition split it first), nothing changes either."""
        if len(pieces) < 2 or any(p[1] != q[0] for p, q in pairwise(pieces)):
            raise ValueError(f"not pieces of one window, in order: {pieces}")
        bounds = [pieces[0][0], *(p[1] for p in pieces)]
        first, added = self._split(keys=[keys.run(run_id)],
                                   args=[partition, MAX_WINDOWS, *bounds])
        return Split(int(first), int(added))
