"""The time windows of a sliced run, on its record in Redis (``integrations.slices``).

Each window is a partition of the run: field ``window:{i}`` holds its bounds ``[a, b]`` and
``since:{i}`` is null (its bounds say what it reads); ``span`` is what they cover together.
``windows_next`` is the next partition to start: ``claim`` hands out partitions while fewer
than the limit are started and not done, so at most that many windows are read at once across
the fleet; a window split in two (``split``) adds a partition after every other, claimed like
the rest. A claimed window is
read by the task it was claimed for, or by that task's continuation: the message names it.
"""

from __future__ import annotations

import json
from typing import Any, cast

import redis

from integrations.slices import MAX_WINDOWS, Window
from tasks.runs import keys, scripts


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
            fields[f"window:{i}"] = json.dumps(window)
            fields[f"since:{i}"] = "null"
        if incremental:
            fields["incremental"] = "1"
        self.r.hset(keys.run(run_id), mapping=cast(Any, fields))

    def span(self, run_id: str) -> Window | None:
        """[lo, hi) the run's windows cover; None when it was not cut into any."""
        raw = self.r.hget(keys.run(run_id), "span")
        return None if raw is None else cast(Window, json.loads(raw))

    def get(self, run_id: str, partition: int) -> Window | None:
        """The window partition ``partition`` reads; None when the run is not sliced."""
        raw = self.r.hget(keys.run(run_id), f"window:{partition}")
        return None if raw is None else cast(Window, json.loads(raw))

    def claim(self, run_id: str, limit: int, *, most: int) -> list[int]:
        """The partitions the caller starts now, at most ``most`` of them, while fewer than
        ``limit`` are started and not done (none once the producer is done)."""
        got = self._claim(keys=[keys.run(run_id), keys.run_partitions_done(run_id)],
                          args=[limit, most])
        return [int(i) for i in got]

    def split(self, run_id: str, partition: int, first: Window, second: Window) -> int:
        """Partition ``partition`` reads ``first`` now; the new partition (returned) reads
        ``second``. -1: the run record is gone; -2: the run has MAX_WINDOWS windows already
        (nothing changed)."""
        return int(self._split(keys=[keys.run(run_id)],
                               args=[partition, json.dumps(first), json.dumps(second),
                                     MAX_WINDOWS]))
