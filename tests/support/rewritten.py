"""For modules whose tests rewrite sluice.toml between runs (a mapping added, changed,
removed): the workers read it at each task, so one set of workers serves the whole module.
The fake API, the workers, a client, and the config the module writes first."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from integrations.fakeapi import FakeAPI
from tests.support.workers import Client, Workers


class Rewritten:
    def __init__(self, tmp: Path, api: FakeAPI, workers: Workers, client: Client) -> None:
        self.tmp, self.api, self.workers, self.client = tmp, api, workers, client
        self.db = tmp / "db.sqlite"
        self.config = tmp / "sluice.toml"

    def write(self) -> None:
        """Write ``self.config`` as the module's tests start from."""
        raise NotImplementedError


R = TypeVar("R", bound=Rewritten)


@contextmanager
def rewritten(cls: type[R], tmp: Path, redis_url: str) -> Iterator[R]:
    """A ``cls`` on a fresh fake API, its config written, its workers started; at the end the
    client closed and the workers stopped."""
    with FakeAPI() as api:
        workers = Workers(config=tmp / "sluice.toml", redis_url=redis_url,
                          log=tmp / "worker.log")
        bench = cls(tmp, api, workers, Client(redis_url))
        bench.write()
        workers.start()
        try:
            yield bench
        finally:
            bench.client.close()
            workers.stop()
