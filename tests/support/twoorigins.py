"""The bench of the modules that test paging across origins (test_paginators, test_trust): the
fake API the sources read, another fake API on another origin that a next URL may point to,
the workers, a client and the SQLite target's file (the config is ``configs.api_and_open``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from integrations.fakeapi import FakeAPI
from tests.support.workers import Client, Workers


@dataclass
class TwoOrigins:
    api: FakeAPI
    other: FakeAPI
    workers: Workers
    client: Client
    db: Path


B = TypeVar("B", bound=TwoOrigins)
WriteConfig = Callable[..., Path]  # (path, *, api, other, db) -> path


@contextmanager
def two_origins(cls: type[B], tmp: Path, redis_url: str, write_config: WriteConfig, *,
                env: dict[str, str], flush: bool = False) -> Iterator[B]:
    """A ``cls`` on two fresh fake APIs, with the config ``write_config`` writes for them and
    workers started with ``env`` (``flush``: then Redis's database emptied); at the end the
    workers stopped and the client closed."""
    with FakeAPI() as api, FakeAPI() as other:
        db = tmp / "db.sqlite"
        cfg = write_config(tmp / "sluice.toml", api=api, other=other, db=db)
        workers = Workers(config=cfg, redis_url=redis_url, log=tmp / "worker.log",
                          env=env).start()
        client = Client(redis_url)
        if flush:
            client.redis.flushdb()
        try:
            yield cls(api, other, workers, client, db)
        finally:
            workers.stop()
            client.close()
