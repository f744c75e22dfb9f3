"""Celery beat runs the schedules of sluice.toml; two beats never both act; a scheduled resync
of a kind that is still running is skipped and recorded, not stacked."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from integrations.fakeapi import FakeAPI
from tasks.operator.supervisor import Child, celery
from tests.support.workers import ROOT, Client, Workers, cursor_config

pytestmark = pytest.mark.integration


def beat(workers: Workers, log: Path) -> Child:
    return Child("beat", celery("beat", "--loglevel", "INFO"), log=log, cwd=ROOT,
                 env=workers.env).start()


def test_two_beats_run_each_schedule_once_and_busy_kinds_are_skipped(
        tmp_path: Path, own_redis_url: str):
    with FakeAPI() as api:
        api.set_items("tick", 20)
        api.state.delays["/cursor/tick"] = 1.2  # a run (2 pages) outlasts the 1 s schedule
        config = cursor_config(tmp_path, api.url, source="clock", kind="tick", limit=10,
                               source_keys='every = "1s"')
        with Workers(config=config, redis_url=own_redis_url,
                     log=tmp_path / "worker.log") as workers:
            client = Client(own_redis_url)
            beats = [beat(workers, tmp_path / f"beat{i}.log") for i in (1, 2)]

            def sent() -> list[int]:
                return [b.log.read_text().count("Sending due task resync-clock")
                        for b in beats if b.log]

            def enough() -> bool:  # beat sent five, and both outcomes were seen
                states = [r.state for r in client.progress.recent(100)]
                return max(sent()) >= 5 and states.count("skipped") >= 2 and \
                    states.count("succeeded") >= 2

            try:  # a busy machine takes longer to get there: wait for it, not for 12 s
                beats[0].wait_until(enough, timeout=120, poll=0.5)
            finally:
                for b in beats:
                    b.stop(timeout=15)
            senders = sent()
            # Every task beat sent made its run record (the last may still be on its way).
            workers.child.wait_until(lambda: len(client.progress.recent(100)) >= max(senders),
                                     timeout=60)
            runs = client.progress.recent(100)
            client.close()
    assert sorted(senders)[0] == 0, senders  # one beat acts, the other waits
    states = [r.state for r in runs]
    # ~1 scheduled resync a second, each ~2.4 s long: most ticks find the kind busy.
    assert len(runs) == max(senders)
    assert states.count("skipped") >= 2 and states.count("succeeded") >= 2
    assert all("still running" in r.reason for r in runs if r.state == "skipped")
    spans = sorted((r.started_at, r.ended_at or 1e12) for r in runs
                   if r.state != "skipped")
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))  # never two at once
