"""Shared fixtures: a real Redis server on a free port, and the fake API.

Nothing here talks to a service that happens to be running on this machine: Redis is started
by the tests, PostgreSQL comes from $SLUICE_TEST_POSTGRES_DSN (see tests/unit/test_targets.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

# Before anything imports the Celery app: nothing listens on port 9, so code in this process
# that would reach for a default Redis fails loudly instead of using the machine's Redis.
os.environ["SLUICE_REDIS_URL"] = "redis://127.0.0.1:9/0"

from integrations.fakeapi import FakeAPI
from tasks.operator.redisserver import RedisServer


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    # A missing binary is an error, not a skip: CI must fail when Redis cannot run.
    with RedisServer() as server:
        # Anything in this process that reads settings talks to this server, never to a
        # Redis that happens to listen on the default port.
        os.environ["SLUICE_REDIS_URL"] = server.url
        yield server


@pytest.fixture
def api() -> Iterator[FakeAPI]:
    with FakeAPI() as fake:
        yield fake
