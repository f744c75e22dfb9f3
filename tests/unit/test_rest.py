"""The REST integration's paginators, driven by the pager, against the fake API (a real
HTTP server in a thread on loopback)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from integrations import pager
from integrations.errors import MalformedPage
from integrations.fakeapi import FakeAPI
from integrations.rest.integration import RestIntegration
from integrations.rest.settings import RestSettings

PAGINATORS: dict[str, dict[str, Any]] = {
    "cursor": {"path": "/cursor/k", "items": "data",
               "paginator": {"type": "cursor", "cursor_path": "next_cursor", "limit": 30}},
    "link": {"path": "/link/k", "paginator": {"type": "link", "limit": 30}},
    "offset": {"path": "/offset/k", "items": "values",
               "paginator": {"type": "offset", "offset_param": "startAt",
                             "limit_param": "maxResults", "limit": 30, "total_path": "total"}},
    "offset-no-total": {"path": "/offset/k", "items": "values",
                        "paginator": {"type": "offset", "offset_param": "startAt",
                                      "limit_param": "maxResults", "limit": 30}},
    "page": {"path": "/page/k", "items": "items", "paginator": {"type": "page", "limit": 30}},
    "page-total": {"path": "/page/k", "items": "items",
                   "paginator": {"type": "page", "limit": 30, "total_path": "total"}},
    "page-total-header": {"path": "/page/k", "items": "items",
                          "paginator": {"type": "page", "limit": 30,
                                        "total_header": "X-Total-Count"}},
    "next_url": {"path": "/nexturl/k", "items": "value",
                 "paginator": {"type": "next_url", "path": "@odata.nextLink",
                               "limit_param": "top", "limit": 30}},
    "next_url-relative": {"path": "/nexturl/k", "items": "value",
                          "paginator": {"type": "next_url", "path": "links.next",
                                        "limit_param": "top", "limit": 30}},
    "next_url-header": {"path": "/nexthdr/k", "items": "data",
                        "paginator": {"type": "next_url", "header": "Next-Page",
                                      "limit_param": "_limit", "limit": 30}},
    "keyset": {"path": "/keyset/k", "items": "data",
               "paginator": {"type": "keyset", "param": "starting_after", "field": "id",
                             "has_more_path": "has_more", "limit": 30}},
    "keyset-short": {"path": "/keyset/k", "items": "data",
                     "paginator": {"type": "keyset", "param": "starting_after", "field": "id",
                                   "limit": 30}},
}


def integration(api: FakeAPI, kind: dict[str, Any]) -> RestIntegration:
    return RestIntegration(RestSettings.model_validate(
        {"integration": "rest", "base_url": api.url, "kinds": {"k": kind},
         "http": {"retries": 0}}))


def collect(integ: RestIntegration, *, checkpoint=None, stop_after: int | None = None,
            concurrency: int = 4, published=()):
    async def go():
        client = integ.client()
        pages = []
        got = pager.pages(integ, "k", client, checkpoint=checkpoint, concurrency=concurrency,
                          published=published)
        async for page in got:
            pages.append(page)
            if stop_after and len(pages) == stop_after:
                break
        await got.aclose()
        await client.aclose()
        return pages
    return asyncio.run(go())


def in_order(pages) -> list:
    return [i for p in sorted(pages, key=lambda p: p.seq) for i in p.items]


@pytest.mark.parametrize("name", list(PAGINATORS))
@pytest.mark.parametrize("count", [0, 29, 30, 95])
def test_every_paginator_yields_every_item_once(api: FakeAPI, name: str, count: int):
    items = api.set_items("k", count)
    pages = collect(integration(api, PAGINATORS[name]))
    assert in_order(pages) == items
    assert sorted(p.seq for p in pages) == list(range(1, len(pages) + 1))
    full = sorted((p for p in pages if p.items), key=lambda p: p.seq)[:-1]
    assert all(len(p.items) == 30 for p in full)  # every page but the last one is full


@pytest.mark.parametrize("name", ["cursor", "link", "offset", "page", "page-total", "next_url",
                                  "next_url-header", "keyset"])
def test_a_run_resumes_from_the_saved_checkpoint(api: FakeAPI, name: str):
    items = api.set_items("k", 100)
    integ = integration(api, PAGINATORS[name])
    first = collect(integ, stop_after=2, concurrency=1)
    rest = collect(integ, checkpoint=first[-1].checkpoint, published={p.seq for p in first})
    assert in_order(first + rest) == items


@pytest.mark.parametrize("name,planned", [("cursor", False), ("link", True), ("offset", True),
                                          ("offset-no-total", False), ("page", False),
                                          ("page-total", True), ("page-total-header", True),
                                          ("next_url", False), ("next_url-header", False),
                                          ("keyset", False)])
def test_pages_known_up_front_are_fetched_concurrently(api: FakeAPI, name: str, planned: bool):
    api.set_items("k", 300)  # 10 pages
    api.server.latency = 0.1
    integ = integration(api, PAGINATORS[name])
    pages = collect(integ, concurrency=8)
    log = api.requests("/")
    # Pages 2..10 took one round trip or two when planned (8 at a time), nine one after
    # another otherwise (0.9 s at least).
    span = log[9][0] - log[0][0]
    assert (span < 0.5) is planned, span
    assert len(in_order(pages)) == 300


def test_planned_requests_go_on_while_the_caller_is_busy_and_stay_bounded(api: FakeAPI):
    api.set_items("k", 900)  # 30 pages
    api.server.latency = 0.02
    integ = integration(api, PAGINATORS["link"])

    async def go() -> tuple[int, int]:
        client = integ.client()
        got = pager.pages(integ, "k", client, checkpoint=None, concurrency=4)
        await anext(got)  # page 1; then the caller is busy publishing it for a while
        await asyncio.sleep(0.5)
        asked = len(api.requests("/link/k"))
        rest = [page async for page in got]
        await client.aclose()
        return asked, len(rest)

    asked, rest = asyncio.run(go())
    # Page 1, then 4 answered pages waiting for the caller and 4 more answered requests
    # waiting for room: requests did not stop at 4 in flight, and at most 2 × 4 pages are held.
    assert asked == 1 + 4 + 4
    assert rest == 29


def test_a_caller_that_stops_taking_planned_pages_closes_them_at_once(api: FakeAPI):
    api.set_items("k", 900)  # 30 pages
    integ = integration(api, PAGINATORS["link"])

    async def go() -> None:
        client = integ.client()
        got = pager.pages(integ, "k", client, checkpoint=None, concurrency=2)
        await anext(got)  # page 1; then the caller stops (a shutdown, an error, the end of
        await asyncio.sleep(0.3)  # what changed) while answered pages fill the queue
        await asyncio.wait_for(got.aclose(), 5)  # every requester ends, none hangs
        await client.aclose()

    asyncio.run(go())


def test_link_pages_are_asked_with_the_query_the_api_gave(api: FakeAPI):
    api.set_items("k", 70)
    collect(integration(api, PAGINATORS["link"]), concurrency=1)
    paths = [r[2] for r in api.requests("/link/k")]
    assert paths == ["/link/k?per_page=30", "/link/k?page=2&per_page=30",
                     "/link/k?page=3&per_page=30"]


def test_a_cursor_that_does_not_advance_stops_with_an_error(api: FakeAPI):
    api.set_items("k", 100)
    api.fail("/cursor/k", 200, times=5, body=b'{"data": [{"id": 1}], "next_cursor": "same"}')
    with pytest.raises(MalformedPage, match="cursor did not advance"):
        collect(integration(api, PAGINATORS["cursor"]))


def test_a_total_that_is_not_a_number_is_a_malformed_page(api: FakeAPI):
    api.set_items("k", 100)
    api.fail("/offset/k", 200, body=b'{"values": [{"id": 1}], "total": "lots"}')
    with pytest.raises(MalformedPage, match="'total' is not an integer"):
        collect(integration(api, PAGINATORS["offset"]))


@pytest.mark.parametrize("item,expected", [
    ({"id": 7}, "7"), ({"id": "a"}, "a"), ({"key": {"id": "n"}}, None), ({"id": ""}, None),
    ({"id": None}, None), ({"id": {"x": 1}}, None), ("scalar", None), ({}, None),
])
def test_identifier(api: FakeAPI, item, expected):
    assert integration(api, PAGINATORS["cursor"]).identifier("k", item) == expected


def test_identifier_follows_a_dot_path(api: FakeAPI):
    integ = integration(api, {**PAGINATORS["cursor"], "id": "key.id"})
    assert integ.identifier("k", {"key": {"id": 12}}) == "12"


def test_ids_1_and_text_1_are_one_entity(api: FakeAPI):
    """Stated in the README: the target's key is text, so an API that sends 1 on one page
    and "1" on another updates one entity (the last one written wins)."""
    from tasks.write.entities import to_entities

    integ = integration(api, PAGINATORS["cursor"])
    entities, index_of, rejected = to_entities(
        integ, "s", "k", 1, [{"id": 1, "v": "a"}, {"id": "1", "v": "b"}, {"id": 1.5}])
    assert [(e["identifier"], e["data"]) for e in entities] == [
        ("1", {"id": "1", "v": "b"}), ("1.5", {"id": 1.5})]
    assert index_of == {"1": 1, "1.5": 2} and rejected == []


def test_pages_answered_before_a_failed_request_are_still_handed_over(api: FakeAPI):
    """A planned request that fails (or a slice that ends) stops new requests; the pages
    already answered are yielded before the error, so none is fetched for nothing."""
    api.set_items("k", 300)  # 10 pages of 30
    api.fail("/link/k", 500, times=10, when={"page": "6"})
    integ = integration(api, PAGINATORS["link"])
    got: list = []

    async def go():
        client = integ.client()
        pages = pager.pages(integ, "k", client, checkpoint=None, concurrency=4)
        try:
            async for page in pages:
                got.append(page.seq)
        finally:
            await pages.aclose()
            await client.aclose()

    with pytest.raises(Exception, match="500"):
        asyncio.run(go())
    asked = {r[2] for r in api.requests("/link/k") if r[3] == 200}
    assert len(got) == len(asked)  # every page answered was handed over
    assert {1, 2, 3, 4, 5} <= set(got)


def test_a_link_page_that_is_full_without_any_link_header_is_marked_truncated(api: FakeAPI):
    api.set_items("k", 100)
    integ = integration(api, {"path": "/linkq/k", "paginator": {"type": "link", "limit": 30}})
    [page] = collect(integ)
    assert len(page.items) == 30 and "came without a Link header" in page.truncated
    asked_with_page = integration(api, {"path": "/linkq/k", "params": {"page": 1},
                                        "paginator": {"type": "link", "limit": 30}})
    pages = collect(asked_with_page)
    assert len(in_order(pages)) == 100 and all(p.truncated is None for p in pages)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_a_number_that_is_not_finite_is_no_identifier(api: FakeAPI, value):
    assert integration(api, PAGINATORS["cursor"]).identifier("k", {"id": value}) is None


def test_a_link_fragment_is_dropped_so_it_cannot_hide_a_cycle():
    import httpx

    from integrations.http.paginators import LinkPaginator

    paginator = LinkPaginator(path="/p", limit_param="per_page", limit=5)
    request = httpx.Request("GET", "https://api.test/p?page=1")
    response = httpx.Response(200, request=request,
                              headers={"Link": '<https://api.test/p?page=2#k17>; rel="next"'})
    assert paginator.advance({"url": None}, response, [], []) == {
        "url": "https://api.test/p?page=2"}


@pytest.mark.parametrize("name", ["link", "offset", "page-total"])
def test_a_child_kind_whose_pages_are_planned_reads_every_page(api: FakeAPI, name: str):
    """The planned pages of a child kind are built from its parent's ref (they were built
    without it, and page 2 failed as a parent with no value)."""
    items = api.set_items("k", 95)
    spec = PAGINATORS[name]
    integ = RestIntegration(RestSettings.model_validate(
        {"integration": "rest", "base_url": api.url, "http": {"retries": 0}, "kinds": {
            "post": {"path": "/cursor/post", "items": "data"},
            "k": {**spec, "parent": "post", "params": {"post": "{parent.id}"}}}}))
    ref = integ.parent_ref("post", {"id": "post-1"})

    async def go() -> list[pager.Page]:
        client = integ.client()
        pages = [p async for p in pager.pages(integ, "k", client, checkpoint=None,
                                              key=ref, concurrency=4)]
        await client.aclose()
        return pages

    pages = asyncio.run(go())
    assert len(pages) == 4 and in_order(pages) == items
    assert all(q.get("post") == "post-1" for q in api.state.params_seen)


@pytest.mark.parametrize("name", ["next_url", "next_url-relative", "next_url-header", "keyset"])
def test_followed_pages_keep_a_child_kinds_parent_and_an_incremental_since(api: FakeAPI,
                                                                          name: str):
    """The paginator is built with the filled path and params (and ``since``); a next URL
    carries them on, and keyset sends them with every request."""
    items = api.set_timed_items("k", 95)
    spec = PAGINATORS[name]
    integ = RestIntegration(RestSettings.model_validate(
        {"integration": "rest", "base_url": api.url, "http": {"retries": 0}, "kinds": {
            "post": {"path": "/cursor/post", "items": "data"},
            "k": {**spec, "parent": "post", "params": {"post": "{parent.id}"}},
            "inc": {**spec, "incremental": {"cursor_path": "updated_at", "param": "since"}}}}))
    ref = integ.parent_ref("post", {"id": "post-1"})

    async def go(kind: str, **kw: Any) -> list[pager.Page]:
        client = integ.client()
        pages = [p async for p in pager.pages(integ, kind, client, checkpoint=None, **kw)]
        await client.aclose()
        return pages

    pages = asyncio.run(go("k", key=ref))
    assert len(pages) == 4 and in_order(pages) == items
    assert len(api.state.params_seen) == 4
    assert all(q.get("post") == "post-1" for q in api.state.params_seen)
    api.state.params_seen.clear()
    since = items[40]["updated_at"]
    pages = asyncio.run(go("inc", since=since))
    assert in_order(pages) == items[40:] and len(pages) == 2
    assert [q.get("since") for q in api.state.params_seen] == [since, since]
