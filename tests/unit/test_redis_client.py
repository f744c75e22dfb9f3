"""The pool that closes idle Redis connections (tasks/runs/client.py)."""

from __future__ import annotations

from typing import Any

import redis

from tasks.runs.client import IdlePool


class Stub(redis.Connection):
    """A connection that is open without a socket, and closes by forgetting it."""

    def __init__(self) -> None:
        super().__init__(health_check_interval=30)
        self._sock = object()  # type: ignore[assignment]

    def used(self, at: float) -> None:
        """What redis-py does at every reply."""
        self.next_health_check = at + self.health_check_interval

    def disconnect(self, *_: Any) -> None:
        self._sock = None


def pool_with(n: int) -> tuple[IdlePool, list[Stub]]:
    pool = IdlePool(idle_seconds=10)
    conns = [Stub() for _ in range(n)]
    for c in conns:
        pool._in_use_connections.add(c)
    return pool, conns


def test_only_connections_unused_for_the_idle_time_are_closed_and_they_stay_in_the_pool() -> None:
    pool, (old, recent, busy) = pool_with(3)
    released = 1000.0
    old.used(released)
    recent.used(released + 8)
    busy.used(released)
    pool.release(old)
    pool.release(recent)
    assert pool.close_idle(released + 9) == 0
    assert pool.close_idle(released + 10) == 1
    assert (old.is_connected, recent.is_connected, busy.is_connected) == (False, True, True)
    assert pool._available_connections == [old, recent]  # reconnects when next needed
    assert pool.close_idle(released + 1000) == 1  # recent; never the one in use
    assert busy.is_connected


def test_a_pool_inherited_across_a_fork_is_left_to_the_child() -> None:
    pool, (conn,) = pool_with(1)
    conn.used(1000.0)
    pool.release(conn)
    pool.pid = -1  # as in a forked child, before its pool resets itself
    assert pool.close_idle(5000.0) == 0
    assert conn.is_connected


def test_a_pool_without_a_health_check_gets_one_every_idle_time_and_zero_keeps_all() -> None:
    assert IdlePool(idle_seconds=10).connection_kwargs["health_check_interval"] == 10
    assert IdlePool(idle_seconds=10, health_check_interval=25).connection_kwargs[
        "health_check_interval"] == 25
    assert "health_check_interval" not in IdlePool(idle_seconds=0).connection_kwargs
