"""Redis's replies read by hiredis, commands written by redis-py's own packer.

redis-py reads replies with hiredis when it is installed (``redis[hiredis]``, a dependency):
a batch's message, which each worker takes from Redis (440 KB for 500 issue-like items), costs
0.15 ms of CPU to read instead of 0.7 (redis-py's own parser copies it through a buffer in
Python), and every small reply a little less. But redis-py then also writes commands with
hiredis's packer, which copies each argument into one new buffer: 0.45 ms for a batch's LPUSH,
against 0.003 ms for redis-py's own packer, which sends a big argument as it is. So hiredis
reads and redis-py writes, in every synchronous client of the process (kombu's and Sluice's
own); ``sluice serve``'s asyncio client, which writes no batches, keeps redis-py's choice.
"""

from __future__ import annotations

from typing import Any

from redis import connection


def _packer(self: Any, packer: Any) -> Any:
    """redis-py's ``AbstractConnection._construct_command_packer``, without hiredis's."""
    if packer is not None:
        return packer
    return connection.PythonRespSerializer(self._buffer_cutoff, self.encoder.encode)


def install() -> None:
    setattr(connection.AbstractConnection, "_construct_command_packer", _packer)  # noqa: B010
