"""A worker process's collector (``runtime.tune_gc``): garbage in a cycle does not wait for the
full pass that its raised thresholds make rare (ops/bench/SOAK.md: the worker's RSS rose by
1-2 MB a minute under a light, steady load)."""

from __future__ import annotations

import asyncio
import gc
import threading
import weakref
from collections.abc import Iterator

import httpx
import pytest

from tasks.worker import runtime


@pytest.fixture
def tuned(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``tune_gc`` with a full pass every 10 ms; this process's collector as it was, after."""
    saved = gc.get_threshold()
    monkeypatch.setattr(runtime, "FULL_GC_EVERY", 0.01, raising=False)
    try:
        runtime.tune_gc()
        yield
    finally:
        stop = getattr(getattr(runtime, "FullCollections", None), "stop", None)
        if stop is not None:
            stop()
        gc.unfreeze()
        gc.set_threshold(*saved)


class Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the collector frees it


def test_a_cycle_in_the_oldest_generation_is_freed_on_the_clock(tuned: None) -> None:
    freed = threading.Event()
    node = Node()
    weakref.finalize(node, freed.set)
    gc.collect()  # alive at a pass, as a running task's objects are: now in the oldest one
    del node
    # Without the clock, nothing frees it until ~100 x 20 x 50,000 allocations from now.
    assert freed.wait(10), "the cycle was not collected"


def test_one_thread_per_process(tuned: None) -> None:
    first = runtime.FullCollections.start(60)
    assert runtime.FullCollections.start(60) is first
    assert first.thread.is_alive() and first.every == 0.01


# A page's response: freed when dropped, not at the next young pass ---------------------------

def _fetch(getter: str) -> weakref.ref[httpx.Response]:
    """A weak reference to a 64 KB page's response, fetched by ``getter`` (Sluice's
    ``get_json``, or httpx's own ``client.get``) and then dropped."""
    from integrations.http.client import get_json

    page = b"[" + b",".join([b'{"id": 1}'] * 6500) + b"]"
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=page))

    async def fetch() -> weakref.ref[httpx.Response]:
        async with httpx.AsyncClient(transport=transport) as client:
            if getter == "get_json":
                response, _ = await get_json(client, "http://api.test/items")
            else:
                response = await client.get("http://api.test/items")
            return weakref.ref(response)

    return asyncio.run(fetch())


@pytest.fixture
def no_collector() -> Iterator[None]:
    from tasks.operator.entry import collector_off

    gc.collect()
    with collector_off():
        yield


def test_httpx_keeps_a_response_in_a_cycle(no_collector: None) -> None:
    """The reason for ``unbound``: if httpx stops making the cycle, this fails, and
    ``integrations.http.client.unbound`` can go."""
    assert _fetch("client.get")() is not None


def test_a_page_fetched_by_get_json_is_freed_without_the_collector(no_collector: None) -> None:
    assert _fetch("get_json")() is None
