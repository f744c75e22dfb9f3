"""The REST integration's four paginators, against the fake API through httpx.MockTransport-free
loopback (the fake API is a real HTTP server in a thread)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

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
}


def integration(api: FakeAPI, kind: dict[str, Any]) -> RestIntegration:
    return RestIntegration(RestSettings.model_validate(
        {"integration": "rest", "base_url": api.url, "kinds": {"k": kind},
         "http": {"retries": 0}}))


def collect(integ: RestIntegration, *, state=None, stop_after: int | None = None):
    async def go():
        client = integ.client()
        pages = []
        async for page in integ.pages("k", client, state=state):
            pages.append(page)
            if stop_after and len(pages) == stop_after:
                break
        await client.aclose()
        return pages
    return asyncio.run(go())


@pytest.mark.parametrize("name", list(PAGINATORS))
@pytest.mark.parametrize("count", [0, 29, 30, 95])
def test_every_paginator_yields_every_item_once(api: FakeAPI, name: str, count: int):
    items = api.set_items("k", count)
    pages = collect(integration(api, PAGINATORS[name]))
    assert [i for p in pages for i in p.items] == items
    assert pages[-1].state is None and all(p.state is not None for p in pages[:-1])
    full = [p for p in pages if p.items][:-1]  # every page but the last one with items is full
    assert all(len(p.items) == 30 for p in full)


@pytest.mark.parametrize("name", ["cursor", "link", "offset", "page"])
def test_a_run_resumes_from_the_saved_state(api: FakeAPI, name: str):
    items = api.set_items("k", 100)
    integ = integration(api, PAGINATORS[name])
    first = collect(integ, stop_after=2)
    rest = collect(integ, state=first[-1].state)
    assert [i for p in first + rest for i in p.items] == items


def test_link_next_url_is_followed_as_given(api: FakeAPI):
    api.set_items("k", 70)
    collect(integration(api, PAGINATORS["link"]))
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
