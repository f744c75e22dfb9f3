"""The next_url and keyset paginators, and cursor's has_more_path, against httpx.MockTransport:
what each request asks for, where paging ends, and what ends it truncated or with an error."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from integrations.errors import ForeignOrigin, MalformedPage, PagingCycle
from integrations.fetched import Fetched
from integrations.http.client import get_json, make_client
from integrations.http.paginators import (
    BasePaginator,
    CursorPaginator,
    KeysetPaginator,
    NextUrlPaginator,
    fetched,
)
from integrations.jsonpath import dig
from integrations.rest.settings import KindSettings
from integrations.settings import HttpSettings

Handler = Callable[[httpx.Request], httpx.Response]


def drive(paginator: BasePaginator, handler: Handler, *, items: str = "data",
          allow: tuple[str, ...] = (), max_pages: int = 20
          ) -> tuple[list[httpx.Request], list[Fetched]]:
    """Page through with a guarded client (credentials: X-Api-Key, to https://api.test only)
    as ``PagedIntegration.fetch`` does; every request, and every page read."""
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    async def go() -> list[Fetched]:
        pages: list[Fetched] = []
        async with make_client(base_url="https://api.test", headers={"X-Api-Key": "k-1"},
                               transport=httpx.MockTransport(record), allow_origins=allow,
                               settings=HttpSettings(retries=0)) as client:
            state = None
            while len(pages) < max_pages:
                current = paginator.first() if state is None else state
                url, params = paginator.request(current)
                response, body = await get_json(client, url, params=params)
                got = dig(body, items)
                pages.append(fetched(paginator, current, response, body, got,
                                     first=state is None))
                state = pages[-1].next
                if state is None:
                    break
        return pages

    return seen, asyncio.run(go())


def build(section: dict[str, Any], *, path: str = "/things",
          params: dict[str, Any] | None = None) -> BasePaginator:
    kind = KindSettings.model_validate({"path": path, "params": params or {},
                                        "paginator": section})
    return kind.paginator.build(kind.path, kind.params)


def answer(body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(200, json=body, headers=headers)


# -- dot paths whose keys hold dots -------------------------------------------------------

def test_a_dot_path_reaches_keys_that_hold_dots():
    body = {"@odata.nextLink": "u1", "links": {"next": "u2"}, "a.b": {"c": 3},
            "x": {"y.z": [{"id.v": 7}]}}
    assert dig(body, "@odata.nextLink") == "u1"
    assert dig(body, "links.next") == "u2"
    assert dig(body, "a.b.c") == 3
    assert dig(body, "x.y.z.0.id.v") == 7
    assert dig(body, "@odata.count") is None and dig(body, "links.prev") is None
    # Part by part first: a path that resolved before resolves the same.
    assert dig({"a": {"b": 1}, "a.b": 2}, "a.b") == 1
    assert dig({"a": {"x": 1}, "a.b": 2}, "a.b") == 2  # under "a" it does not resolve


# -- next_url ---------------------------------------------------------------------------

def odata(request: httpx.Request) -> httpx.Response:
    """Three pages of two items; the next link absolute and with a query of its own."""
    skip = int(request.url.params.get("$skip", 0))
    body: dict[str, Any] = {"value": [{"id": skip + i} for i in range(2)]}
    if skip < 4:
        body["@odata.nextLink"] = (f"https://api.test/things?%24top=2&%24skip={skip + 2}"
                                   "&since=2024-01-01")
    return answer(body)


def test_next_url_in_the_body_is_followed_as_given_with_the_limit_only_on_the_first_request():
    paginator = build({"type": "next_url", "path": "@odata.nextLink", "limit_param": "$top",
                       "limit": 2}, params={"since": "2024-01-01"})
    seen, pages = drive(paginator, odata, items="value")
    assert [str(r.url) for r in seen] == [
        "https://api.test/things?since=2024-01-01&%24top=2",
        "https://api.test/things?%24top=2&%24skip=2&since=2024-01-01",
        "https://api.test/things?%24top=2&%24skip=4&since=2024-01-01"]
    assert [i["id"] for p in pages for i in p.items] == [0, 1, 2, 3, 4, 5]
    assert pages[-1].next is None and pages[-1].truncated is None
    assert all(p.plan is None for p in pages)  # sequential: never planned


def test_a_relative_next_url_is_resolved_against_the_request_url():
    def handler(request: httpx.Request) -> httpx.Response:
        after = request.url.params.get("after")
        nxt = {None: "?after=a", "a": "page2?after=b", "b": "/v1/things/page3?after=c"}.get(after)
        return answer({"data": [{"id": after or "0"}], "meta": {"next_page": nxt}})

    seen, pages = drive(build({"type": "next_url", "path": "meta.next_page"},
                              path="/v1/things/list"), handler)
    assert [str(r.url) for r in seen] == [
        "https://api.test/v1/things/list", "https://api.test/v1/things/list?after=a",
        "https://api.test/v1/things/page2?after=b", "https://api.test/v1/things/page3?after=c"]
    assert len(pages) == 4 and pages[-1].truncated is None


def test_next_url_in_a_header_as_kinto_sends_it():
    def handler(request: httpx.Request) -> httpx.Response:
        token = request.url.params.get("_token")
        following = f"https://api.test/buckets/b/records?_limit=500&_token={int(token or 0) + 1}"
        headers = {} if token == "2" else {"Next-Page": following}
        return answer({"data": [{"id": token}]}, headers)

    seen, pages = drive(build({"type": "next_url", "header": "Next-Page", "limit_param": "_limit",
                               "limit": 500}, path="/buckets/b/records"), handler)
    assert [r.url.params.get("_token") for r in seen] == [None, "1", "2"]
    assert all(r.url.params["_limit"] == "500" for r in seen)
    assert len(pages) == 3 and pages[-1].next is None


@pytest.mark.parametrize("section,error", [
    ({"type": "next_url"}, "exactly one of 'path'"),
    ({"type": "next_url", "path": "next", "header": "Next-Page"}, "exactly one of 'path'"),
    ({"type": "next_url", "path": "next", "limit": 50}, "'limit' needs 'limit_param'"),
    ({"type": "next_url", "next_path": "next"}, "next_path"),
    ({"type": "keyset", "param": "starting_after"}, "field"),
])
def test_paginator_settings_that_cannot_work_are_refused(section: dict[str, Any], error: str):
    with pytest.raises(ValidationError, match=error):
        build(section)


def test_a_next_url_back_to_the_same_page_is_a_cycle():
    def handler(request: httpx.Request) -> httpx.Response:
        return answer({"data": [{"id": 1}], "next": "https://api.test/things?page=2"})

    with pytest.raises(PagingCycle, match=r"next URL is the page just read .*page=2"):
        drive(build({"type": "next_url", "path": "next"}), handler)


def test_an_empty_page_that_still_names_a_next_one_ends_truncated():
    def handler(request: httpx.Request) -> httpx.Response:
        if "page" in request.url.params:
            return answer({"data": [], "next": "/things?page=3"})
        return answer({"data": [{"id": 1}], "next": "/things?page=2"})

    seen, pages = drive(build({"type": "next_url", "path": "next"}), handler)
    assert len(seen) == 2 and pages[-1].next is None
    assert "an empty page still named a next page" in (pages[-1].truncated or "")


def test_a_full_last_page_without_a_next_url_is_not_truncated():
    paginator = build({"type": "next_url", "path": "next", "limit_param": "limit", "limit": 2})
    _, pages = drive(paginator, lambda r: answer({"data": [{"id": 1}, {"id": 2}]}))
    assert pages[-1].truncated is None


@pytest.mark.parametrize("value", [42, {"href": "/x"}, ["x"]])
def test_a_next_url_that_is_not_text_is_a_malformed_page(value: Any):
    with pytest.raises(MalformedPage, match="'next' in the body is not a URL"):
        drive(build({"type": "next_url", "path": "next"}),
              lambda r: answer({"data": [{"id": 1}], "next": value}))


def test_next_url_has_more_false_ends_it_and_true_without_a_url_is_truncated():
    _, pages = drive(build({"type": "next_url", "path": "links.next",
                            "has_more_path": "meta.has_more"}),
                     lambda r: answer({"data": [{"id": 1}], "links": {"next": "/things?c=1"},
                                       "meta": {"has_more": False}}))
    assert len(pages) == 1 and pages[0].next is None and pages[0].truncated is None
    _, pages = drive(build({"type": "next_url", "path": "links.next",
                            "has_more_path": "meta.has_more"}),
                     lambda r: answer({"data": [{"id": 1}], "links": {"next": None},
                                       "meta": {"has_more": True}}))
    assert "'meta.has_more' is true" in (pages[0].truncated or "")


def foreign(request: httpx.Request) -> httpx.Response:
    if request.url.host == "cdn.test":
        return answer({"data": [{"id": 2}]})
    return answer({"data": [{"id": 1}], "next": "https://cdn.test/things?page=2"})


def test_a_next_url_to_another_origin_is_refused_unless_allowed_and_gets_no_credentials():
    with pytest.raises(ForeignOrigin, match=r"https://cdn\.test is not this source's"):
        drive(build({"type": "next_url", "path": "next"}), foreign)
    seen, pages = drive(build({"type": "next_url", "path": "next"}), foreign,
                        allow=("https://cdn.test",))
    assert [i["id"] for p in pages for i in p.items] == [1, 2]
    assert seen[0].headers["X-Api-Key"] == "k-1" and "X-Api-Key" not in seen[1].headers


# -- keyset -----------------------------------------------------------------------------

def stripe(total: int, *, limit_cap: int = 100) -> Handler:
    """Objects ob_0..ob_{total-1}, newest first as Stripe lists them, with has_more."""
    ids = [f"ob_{i}" for i in range(total)]

    def handler(request: httpx.Request) -> httpx.Response:
        after = request.url.params.get("starting_after")
        start = 0 if after is None else ids.index(after) + 1
        limit = min(limit_cap, int(request.url.params.get("limit", 10)))
        page = [{"id": i, "object": "charge"} for i in ids[start:start + limit]]
        return answer({"object": "list", "data": page, "has_more": start + limit < total})

    return handler


@pytest.mark.parametrize("total", [0, 3, 5, 7])
def test_keyset_sends_the_last_id_and_stops_when_has_more_is_false(total: int):
    paginator = build({"type": "keyset", "param": "starting_after", "field": "id",
                       "has_more_path": "has_more", "limit": 5}, params={"created[gte]": 10})
    seen, pages = drive(paginator, stripe(total))
    assert [i["id"] for p in pages for i in p.items] == [f"ob_{i}" for i in range(total)]
    assert [r.url.params.get("starting_after") for r in seen] == (
        [None, "ob_4"] if total == 7 else [None])  # has_more false on a full page: no extra
    assert all(r.url.params["created[gte]"] == "10" and r.url.params["limit"] == "5"
               for r in seen)
    assert pages[-1].truncated is None


@pytest.mark.parametrize("total,requests", [(0, 1), (3, 1), (5, 2), (7, 2), (10, 3)])
def test_keyset_without_has_more_stops_at_a_short_or_empty_page(total: int, requests: int):
    paginator = build({"type": "keyset", "param": "starting_after", "field": "id", "limit": 5})
    seen, pages = drive(paginator, stripe(total))
    assert len(seen) == requests
    assert [i["id"] for p in pages for i in p.items] == [f"ob_{i}" for i in range(total)]


def test_keyset_reads_a_dot_path_of_the_last_item():
    def handler(request: httpx.Request) -> httpx.Response:
        after = int(request.url.params.get("id_gt", 0))
        return answer({"data": [{"meta": {"seq": n}} for n in range(after + 1, min(after + 3, 6))]})

    seen, _ = drive(build({"type": "keyset", "param": "id_gt", "field": "meta.seq",
                           "limit": 2}), handler)
    assert [r.url.params.get("id_gt") for r in seen] == [None, "2", "4"]


def test_keyset_has_more_with_an_empty_page_ends_truncated():
    paginator = build({"type": "keyset", "param": "starting_after", "field": "id",
                       "has_more_path": "has_more"})
    _, pages = drive(paginator, lambda r: answer({"data": [], "has_more": True}))
    assert pages[-1].next is None
    assert "an empty page though 'has_more' is true" in (pages[-1].truncated or "")


def test_keyset_a_last_item_without_the_field_is_a_malformed_page():
    paginator = build({"type": "keyset", "param": "starting_after", "field": "uid",
                       "has_more_path": "has_more", "limit": 5})
    with pytest.raises(MalformedPage, match="last item has no 'uid' to send as starting_after"):
        drive(paginator, stripe(20))


def test_keyset_an_api_that_ignores_the_key_is_a_cycle():
    paginator = build({"type": "keyset", "param": "starting_after", "field": "id",
                       "has_more_path": "has_more", "limit": 2})
    with pytest.raises(PagingCycle, match="ends with the item it started after"):
        drive(paginator, lambda r: answer({"data": [{"id": "a"}, {"id": "b"}],
                                           "has_more": True}))


@pytest.mark.parametrize("value", [None, "false", 0])
def test_a_has_more_that_is_not_a_boolean_is_a_malformed_page(value: Any):
    paginator = build({"type": "keyset", "param": "starting_after", "field": "id",
                       "has_more_path": "has_more"})
    with pytest.raises(MalformedPage, match="'has_more' is not true or false"):
        drive(paginator, lambda r: answer({"data": [{"id": "a"}], "has_more": value}))


# -- cursor with has_more_path ------------------------------------------------------------

def test_cursor_has_more_false_ends_paging_though_a_cursor_is_present():
    def handler(request: httpx.Request) -> httpx.Response:
        cursor = request.url.params.get("cursor")
        return answer({"data": [{"id": cursor or "0"}], "next": f"c{cursor or ''}x",
                       "has_more": cursor is None})

    paginator = build({"type": "cursor", "cursor_path": "next", "has_more_path": "has_more"})
    seen, pages = drive(paginator, handler)
    assert [r.url.params.get("cursor") for r in seen] == [None, "cx"]
    assert pages[-1].next is None and pages[-1].truncated is None


def test_cursor_has_more_true_on_an_empty_page_ends_truncated():
    paginator = build({"type": "cursor", "cursor_path": "next", "has_more_path": "has_more"})
    _, pages = drive(paginator, lambda r: answer({"data": [], "next": None, "has_more": True}))
    assert "'has_more' is true" in (pages[-1].truncated or "")
    # Without has_more_path an empty last page with no cursor is simply the end.
    _, pages = drive(build({"type": "cursor", "cursor_path": "next"}),
                     lambda r: answer({"data": [], "next": None, "has_more": True}))
    assert pages[-1].truncated is None


def test_states_are_json():
    """A run stores each state in Redis as its checkpoint."""
    for paginator in (NextUrlPaginator(path="/p", next_path="n", limit_param=None, limit=1),
                      KeysetPaginator(path="/p", param="a", field="id", limit_param="limit",
                                      limit=1),
                      CursorPaginator(path="/p", cursor_path="c", cursor_param="c",
                                      has_more_path="h", limit_param=None, limit=1)):
        assert json.loads(json.dumps(paginator.first())) == paginator.first()


@pytest.mark.parametrize("asked,nxt,last,step,count", [
    ("", "?page=2", "?page=5", 1, 4),  # a page number, the first page asked without it
    ("?page=1", "?page=2", "?page=5", 1, 4),
    ("?sysparm_offset=0", "?sysparm_offset=1000", "?sysparm_offset=5000", 1000, 5),
    ("", "?sysparm_offset=1000", "?sysparm_offset=5000", 1000, 5),  # offset = the page's items
])
def test_a_link_plan_steps_by_what_the_counter_counts(asked: str, nxt: str, last: str,
                                                      step: int, count: int) -> None:
    """ServiceNow's Link header counts items (sysparm_offset), GitHub's pages: the plan steps
    by what the next link adds to this page's counter, so no page is read twice."""
    from integrations.http.paginators import LinkPaginator

    base = "https://api.example/items"
    request = httpx.Request("GET", base + asked)
    response = httpx.Response(200, request=request, headers={
        "link": f'<{base}{nxt}>; rel="next", <{base}{last}>; rel="last"'})
    paginator = LinkPaginator(path="/items", limit_param=None, limit=1000)
    plan = paginator.plan({"url": None}, response, [], [{}] * 1000)
    assert plan is not None and plan["step"] == step and plan["count"] == count
    param = httpx.URL(base + nxt).params
    name = next(iter(param))
    values = [int(httpx.URL(paginator.planned(plan, i)["url"]).params[name])
              for i in range(count)]
    assert values == [int(param[name]) + i * step for i in range(count)]
    assert values[-1] == int(httpx.URL(base + last).params[name])
