"""Beat with 300 sources: every source's resync is enqueued each time it is due."""

from __future__ import annotations

import base64
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tasks.app import QUEUE
from tasks.operator.redisserver import RedisServer
from tasks.operator.supervisor import Child, celery
from tests.support.sources import many_sources
from tests.support.workers import ROOT

pytestmark = pytest.mark.integration

N = 300


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with RedisServer() as redis_server:
        yield redis_server


class Queue:
    """The resync_source messages beat put in the queue (no worker takes them), read as they
    come: kombu pushes at the head, so only the head's new messages are decoded each time."""

    def __init__(self, r: redis.Redis) -> None:
        self.r = r
        self.seen = 0
        self.counts: Counter[str] = Counter()  # source -> messages

    def read(self) -> Counter[str]:
        new = int(self.r.llen(QUEUE)) - self.seen
        for raw in self.r.lrange(QUEUE, 0, new - 1) if new > 0 else []:
            message = json.loads(raw)
            if message["headers"]["task"] == "sluice.resync_source":
                body = message["body"]
                if message["properties"].get("body_encoding") == "base64":
                    body = base64.b64decode(body)
                # the body as JSON in the envelope (body_encoding "json"), or as a string in it
                embedded = message["properties"].get("body_encoding") == "json"
                decoded = body if embedded else json.loads(body)
                args, _kwargs, _embed = decoded
                self.counts[args[0]] += 1
        self.seen += max(new, 0)
        return self.counts


def test_beat_enqueues_each_of_300_sources_every_time_it_is_due(tmp_path: Path,
                                                                server: RedisServer):
    # 2 to 5 s apart, so every source comes due twice within seconds.
    config = many_sources(tmp_path / "sluice.toml", "http://127.0.0.1:9", N,
                          schedule=lambda i: f'every = "{2 + i % 4}s"')
    r = redis.Redis.from_url(server.url)
    queue = Queue(r)
    names = [f"src{i:03d}" for i in range(N)]
    beat = Child("beat", celery("beat", "--loglevel", "INFO", "--schedule",
                                str(tmp_path / "celerybeat-schedule")),
                 log=tmp_path / "beat.log", cwd=ROOT,
                 env={"SLUICE_CONFIG": str(config), "SLUICE_REDIS_URL": server.url})
    with beat:
        beat.wait_until(lambda: min(queue.read()[name] for name in names) >= 2, timeout=180,
                        poll=0.5)
    assert set(queue.read()) == set(names)  # and nothing else
    assert "ERROR" not in (tmp_path / "beat.log").read_text()
    r.close()
