"""Integration fixtures: a fake API, a sluice.toml pointing at it, real workers on real Redis."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from integrations.fakeapi import FakeAPI
from tests.support.configs import BEARER, cursor_kind, offset_kind, rest_source, toml
from tests.support.databases import RedisDatabases
from tests.support.workers import Client, Workers, rabbitmq_url

TOKEN = "tok-3f9a61c2-never-log-me"

KINDS = """
[sources.api.kinds.cur]
path = "/cursor/cur"
items = "data"
paginator = { type = "cursor", cursor_path = "next_cursor", limit = 40 }

[sources.api.kinds.lnk]
path = "/link/lnk"
paginator = { type = "link", limit = 40 }

[sources.api.kinds.downl]
path = "/link/downl"
paginator = { type = "link", limit = 50 }

""" + offset_kind("off", limit=40) + """
[sources.api.kinds.pg]
path = "/page/pg"
items = "items"
paginator = { type = "page", limit = 40 }

[sources.api.kinds.pgt]
path = "/page/pgt"
items = "items"
paginator = { type = "page", limit = 40, total_path = "total" }
"""

# Kinds that tests give their own data and faults; all cursor-paged, 50 per page.
CURSOR_KINDS = ["noid", "r429", "storm", "longstorm", "bad", "noitems", "stale", "slow",
                "dup", "kill", "down", "deadl", "retryok", "unstorable", "trickle"]


def write_config(path: Path, *, api_url: str, target: str, max_in_flight: int = 32) -> Path:
    # A module's pipeline gives a kind other item counts from test to test; the default guard
    # (20%) has tests of its own (test_trust.py).
    text = toml(f"[target]\n{target}",
                rest_source(api_url, BEARER, f"max_in_flight = {max_in_flight}",
                            "delete_threshold = 0.9",
                            "http = { retries = 4, backoff = 0.05, max_backoff = 0.2 }"),
                KINDS,
                # "noitems" is served by the offset endpoint, whose body has no "data" list.
                *(cursor_kind(kind, path=f"/{'offset' if kind == 'noitems' else 'cursor'}/{kind}")
                  for kind in CURSOR_KINDS))
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def shared_api() -> Iterator[FakeAPI]:
    with FakeAPI() as fake:
        yield fake


class Pipeline:
    """Everything an integration test touches: the API, the workers, the run records."""

    def __init__(self, api: FakeAPI, workers: Workers, client: Client, db: Path | None, *,
                 pg: tuple[str, str] | None = None):
        self.pg = pg
        self.api = api
        self.workers = workers
        self.client = client
        self.db = db

    def rows(self, kind: str) -> dict[str, dict]:
        import json

        if self.pg:
            import psycopg

            dsn, table = self.pg
            with psycopg.connect(dsn) as conn:
                return dict(conn.execute(f"SELECT identifier, data FROM {table}"
                                         " WHERE source = 'api' AND kind = %s", (kind,)))
        assert self.db is not None
        with sqlite3.connect(self.db) as conn:
            return {i: json.loads(d) for i, d in conn.execute(
                "SELECT identifier, data FROM entities WHERE source = 'api' AND kind = ?",
                (kind,))}


@contextmanager
def running_pipeline(tmp: Path, api: FakeAPI, databases: RedisDatabases, *, target: str,
                     db: Path | None = None, pg: tuple[str, str] | None = None,
                     broker_url: str | None = None, **config: Any) -> Iterator[Pipeline]:
    """Workers on a Redis database of their own (and the queue on ``broker_url``, if given)
    with a sluice.toml for ``target``; stopped after."""
    cfg = write_config(tmp / "sluice.toml", api_url=api.url, target=target, **config)
    env = {"SLUICE_TEST_TOKEN": TOKEN, **({"SLUICE_BROKER_URL": broker_url} if broker_url else {})}
    with databases.lease() as url:
        workers = Workers(config=cfg, redis_url=url, log=tmp / "worker.log", env=env).start()
        client = Client(url, broker_url=broker_url)
        try:
            yield Pipeline(api, workers, client, db, pg=pg)
        finally:
            workers.stop()
            client.close()


@pytest.fixture(scope="module")
def sqlite_pipeline(tmp_path_factory, shared_api, redis_databases) -> Iterator[Pipeline]:
    tmp = tmp_path_factory.mktemp("sqlite-pipeline")
    db = tmp / "sluice.db"
    with running_pipeline(tmp, shared_api, redis_databases, db=db,
                          target=f'type = "sqlite"\npath = "{db}"') as pipeline:
        yield pipeline


@pytest.fixture(scope="module")
def rabbitmq_pipeline(tmp_path_factory, shared_api, redis_databases) -> Iterator[Pipeline]:
    """The SQLite pipeline with its queue on RabbitMQ (progress and locks stay in Redis)."""
    broker_url = rabbitmq_url()
    tmp = tmp_path_factory.mktemp("rabbitmq-pipeline")
    db = tmp / "sluice.db"
    with running_pipeline(tmp, shared_api, redis_databases, db=db,
                          broker_url=broker_url,
                          target=f'type = "sqlite"\npath = "{db}"') as pipeline:
        yield pipeline


@pytest.fixture(params=["redis", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)])
def pipeline(request) -> Pipeline:
    """The core cases run twice: with the queue on Redis, and on RabbitMQ."""
    fixture = "sqlite_pipeline" if request.param == "redis" else "rabbitmq_pipeline"
    pipeline: Pipeline = request.getfixturevalue(fixture)
    with pipeline.api.server.lock:  # the API is shared: each case reads its own requests
        pipeline.api.state.log.clear()
        pipeline.api.state.faults.clear()
    return pipeline


@pytest.fixture(scope="module")
def http_pipeline(tmp_path_factory, shared_api, redis_databases) -> Iterator[Pipeline]:
    tmp = tmp_path_factory.mktemp("http-pipeline")
    with running_pipeline(tmp, shared_api, redis_databases, max_in_flight=4,
                          target=f'type = "http"\nurl = "{shared_api.url}/sink/{{kind}}"\n'
                                 'deadline = 1') as pipeline:
        yield pipeline


@pytest.fixture(scope="module")
def postgres_pipeline(tmp_path_factory, shared_api, redis_databases) -> Iterator[Pipeline]:
    from tests.unit.test_targets import postgres_dsn

    dsn = postgres_dsn()
    table = f"sluice_it_{os.getpid()}"
    tmp = tmp_path_factory.mktemp("postgres-pipeline")
    try:
        with running_pipeline(tmp, shared_api, redis_databases, pg=(dsn, table),
                              target=f'type = "postgres"\ndsn = "{dsn}"\ntable = "{table}"'
                              ) as pipeline:
            yield pipeline
    finally:
        import psycopg

        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {table}, {table}_state")
