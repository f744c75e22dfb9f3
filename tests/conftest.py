"""Shared fixtures: a real Redis server on a free port, a database of it for each test module,
and the fake API.

Nothing here talks to a service that happens to be running on this machine: Redis is started
by the tests, PostgreSQL comes from $SLUICE_TEST_POSTGRES_DSN (see tests/unit/test_targets.py).
A test that starts a process (a Redis server included) is an integration test: the marker is
set here for every test under tests/integration/ and every test that asks for ``redis_server``,
so ``pytest -m "not integration"`` starts none.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# Before anything imports the Celery app: nothing listens on port 9, so code in this process
# that would reach for a default Redis fails loudly instead of using the machine's Redis.
os.environ["SLUICE_REDIS_URL"] = "redis://127.0.0.1:9/0"

from integrations.fakeapi import FakeAPI
from tasks.operator.redisserver import RedisServer
from tests.support.databases import DATABASES, RedisDatabases

INTEGRATION = Path(__file__).parent / "integration"


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if INTEGRATION in item.path.parents or "redis_server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    # A missing binary is an error, not a skip: CI must fail when Redis cannot run.
    server = RedisServer()
    server.extra_args = ["--databases", str(DATABASES)]
    with server:
        # Anything in this process that reads settings talks to this server, never to a
        # Redis that happens to listen on the default port.
        os.environ["SLUICE_REDIS_URL"] = server.url
        yield server


@pytest.fixture(scope="session")
def redis_databases(redis_server: RedisServer) -> RedisDatabases:
    return RedisDatabases(redis_server)


@pytest.fixture(scope="module")
def redis_url(redis_databases: RedisDatabases) -> Iterator[str]:
    """The test module's own Redis database (its URL), empty when the module starts."""
    with redis_databases.lease() as url:
        yield url


@pytest.fixture
def own_redis_url(redis_databases: RedisDatabases) -> Iterator[str]:
    """A Redis database of the test's own, for a test that starts workers of its own."""
    with redis_databases.lease() as url:
        yield url


@pytest.fixture
def api() -> Iterator[FakeAPI]:
    with FakeAPI() as fake:
        yield fake
