"""Two worker nodes on one Redis, node 'a' working and node 'b' in reserve: the tests of a lost
node kill 'a' at a chosen instant and check that 'b' finishes the run without loss or repeat."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tasks.operator.redisserver import RedisServer
from tests.support.workers import Client, Workers


@dataclass
class TwoNodes:
    a: Workers
    b: Workers
    client: Client

    def take_over(self) -> None:
        """Once node a's child is killed: wait for node a to exit, then start node b (so that
        what b does is all that happens after the kill)."""
        assert self.a.process
        self.a.process.wait(10)
        self.b.start()


@contextmanager
def two_nodes(config: Path, tmp: Path, env: dict[str, str]) -> Iterator[TwoNodes]:
    """A Redis of its own, node a started (log ``tmp/a.log``), node b not yet (``tmp/b.log``);
    both stopped, and the client closed, at the end."""
    with RedisServer() as server:
        client = Client(server.url)
        a = Workers(config=config, redis_url=server.url, log=tmp / "a.log", name="a",
                    env=env).start()
        b = Workers(config=config, redis_url=server.url, log=tmp / "b.log", name="b", env=env)
        try:
            yield TwoNodes(a, b, client)
        finally:
            b.stop()
            a.stop()
            client.close()
