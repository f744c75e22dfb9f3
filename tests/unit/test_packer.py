"""tasks/worker/packer.py: replies read by hiredis, commands written by redis-py's own packer
(hiredis's copies a batch's 440 KB message into a new buffer to send it)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from redis import connection
from redis.utils import HIREDIS_AVAILABLE

from tasks.worker import packer


@pytest.fixture
def r(own_redis_url: str) -> Iterator[redis.Redis]:
    packer.install()
    client = redis.Redis.from_url(own_redis_url)
    yield client
    client.close()


def test_hiredis_reads_and_redis_py_writes(r: redis.Redis) -> None:
    assert HIREDIS_AVAILABLE  # a dependency: redis[hiredis]
    message = "é" * 300_000 + "x"  # a big argument, sent as it is
    r.lpush("q", message)
    conn = r.connection_pool.get_connection()
    try:
        assert isinstance(conn._command_packer, connection.PythonRespSerializer)
        assert isinstance(conn._parser, connection._HiredisParser)
    finally:
        r.connection_pool.release(conn)
    assert r.lindex("q", 0) == message.encode()
    assert r.execute_command("EVAL", "return ARGV[1]", 0, message) == message.encode()
