"""Traces over real workers: `sluice run` and a prefork worker node export by OTLP/HTTP to a
receiver in the test (tests/support/otlp.py), as they would to a collector. The batch
processors wait far longer than the test: every span arrives through the flush at the end of
the CLI and of each worker process (a prefork child, or a threads-pool node)."""

from __future__ import annotations

import os
import subprocess
from collections import Counter
from collections.abc import Iterator

import pytest

from integrations.fakeapi import FakeAPI
from integrations.fakeauth import bearer_token
from tasks.operator.redisserver import RedisServer
from tests.support.otlp import Receiver, Span
from tests.support.workers import ROOT, SLUICE, Client, Workers, cursor_config

pytestmark = pytest.mark.integration

TOKEN = "tok-77c1-trace-never-export-me"
ITEMS, LIMIT = 130, 25  # 6 pages
ENV = {"TRACE_TOKEN": TOKEN, "OTEL_BSP_SCHEDULE_DELAY": "600000",
       # two pages a slice: continuation slices, each enqueued under the run's root
       "SLUICE_PRODUCER_SLICE_PAGES": "2"}


@pytest.fixture(scope="module", params=["prefork", "threads"])
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[tuple[Receiver, str]]:
    """One run through a worker node of each pool (threads: a plain worker's default)."""
    tmp = tmp_path_factory.mktemp("traces")
    with RedisServer() as server, FakeAPI(auth=bearer_token(TOKEN)) as api, \
            Receiver() as receiver:
        api.set_items("item", ITEMS)
        config = cursor_config(tmp, api.url, limit=LIMIT,
                               source_keys='auth = { type = "bearer", token = "${TRACE_TOKEN}" }')
        env = {**ENV, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url}
        with Workers(config=config, redis_url=server.url, log=tmp / "worker.log", env=env,
                     pool=request.param):
            done = subprocess.run(
                [*SLUICE, "run", "api", "--wait", "--json"], cwd=ROOT, capture_output=True,
                text=True, timeout=120,
                env={**os.environ, **env, "SLUICE_CONFIG": str(config),
                     "SLUICE_REDIS_URL": server.url})
            assert done.returncode == 0, done.stdout + done.stderr
        client = Client(server.url)
        run = client.progress.recent(1)[0]
        client.close()
        assert run.pages == 6 and run.traceparent, run
        yield receiver, run.run_id


def by_name(spans: list[Span], name: str) -> list[Span]:
    return [s for s in spans if s.name == name]


def test_a_run_is_one_trace_of_slices_pages_batches_and_finalize(
        exported: tuple[Receiver, str]) -> None:
    receiver, run_id = exported
    # `sluice run` asked a worker to start the run (tasks/operator/thin.py): that task is a
    # trace of its own, to which the run's root links, as a schedule's task is.
    (request,) = by_name(receiver.spans, "sluice.start_request")
    spans = [s for s in receiver.spans if s is not request]
    (root,) = by_name(spans, "sluice.run")
    assert root.attributes["sluice.run_id"] == run_id and root.service == "sluice"
    assert not root.parent_id and not request.parent_id
    assert root.links == [request.span_id] and request.trace_id != root.trace_id
    assert {s.trace_id for s in spans} == {root.trace_id}, Counter(s.name for s in spans)
    ids = {s.span_id: s for s in spans}
    assert all(s.parent_id in ids for s in spans if s is not root), "a span lost its parent"

    def parent(s: Span) -> Span:
        return ids[s.parent_id]

    slices = by_name(spans, "sluice.produce slice")
    assert len(slices) >= 3  # two pages a slice
    for s in slices:  # every slice hangs from the root, not from the slice before it
        assert parent(s).name == "apply_async/sluice.resync" and parent(parent(s)) is root
        assert s.attributes["sluice.run_id"] == run_id
    pages = by_name(spans, "sluice.produce page")
    assert sorted(p.attributes["sluice.seq"] for p in pages) == [1, 2, 3, 4, 5, 6]
    assert sum(p.attributes["sluice.items"] for p in pages) == ITEMS
    assert all(parent(p).name == "sluice.produce slice" for p in pages)
    writes = by_name(spans, "sluice.batch write")
    assert sorted(w.attributes["sluice.seq"] for w in writes) == [1, 2, 3, 4, 5, 6]
    assert sum(w.attributes["sluice.written"] for w in writes) == ITEMS
    for w in writes:
        assert parent(w).name == "apply_async/sluice.ingest_batch"
        assert parent(parent(w)).name == "sluice.produce page"
        assert parent(parent(w)).attributes["sluice.seq"] == w.attributes["sluice.seq"]
    (final,) = by_name(spans, "sluice.finalize")
    assert final.attributes["sluice.state"] == "succeeded"
    assert parent(final).name == "apply_async/sluice.finalize"
    requests = [s for s in spans if s.name == "GET"]
    assert len(requests) == 6
    assert all(parent(r).name == "sluice.produce slice" for r in requests)
    assert all("/cursor/item" in r.attributes["url.full" if "url.full" in r.attributes
                                             else "http.url"] for r in requests)


def test_no_token_and_no_item_value_leaves_in_a_span(exported: tuple[Receiver, str]) -> None:
    receiver, _ = exported
    sent = b"".join(receiver.bodies)
    assert sent
    assert TOKEN.encode() not in sent
    assert b"Bearer" not in sent
    for i in range(ITEMS):
        assert f"item number {i}".encode() not in sent
        assert f'"item-{i}"'.encode() not in sent
