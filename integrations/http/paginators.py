"""One paginator interface (after dlt's): build a request from a state, read the next state
from the response. States are small JSON dicts, so a run can stop after any page and resume.

    state = paginator.first()
    while state is not None:
        url, params = paginator.request(state)
        response, body = await get_json(client, url, params=params,
                                        json=paginator.payload(state))  # None: a GET
        paginator.check(response, body)     # an error answered 200 (GraphQL's errors)
        items = ...                         # from the body
        state = paginator.advance(state, response, body, items)

Six styles: ``cursor`` (a token in the body), ``link`` (RFC 8288 Link header, rel="next"),
``next_url`` (the next page's URL in the body or in a header of its own), ``keyset`` (the
last item's field sent as the next request's parameter), ``offset`` (offset + limit,
optional total), ``page`` (page number + size, optional total); and ``single`` (one
request). ``PAGINATORS`` maps each style's name (the ``type`` of a paginator in sluice.toml)
to its class; its constructor takes that section's keys. ``graphql`` (a POSTed query, paged
by a Relay connection's endCursor) lives in ``integrations.http.graphql``, built by its own
settings model. An integration with an API of its own pages subclasses ``BasePaginator``.

Every URL a paginator is led to passes the client's origin guard (credentials only to the
source's origins); a state that repeats the previous one raises PagingCycle here, longer
cycles and ``max_pages`` are caught by the run. ``truncated`` says why paging that ended may
have missed pages (then the run deletes nothing).

When the first page reveals how many pages there are (rel="last", a total), ``plan`` returns a
small JSON plan of every remaining page and ``planned(plan, i)`` the state of page i, so the
pager can fetch them concurrently.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import parse_qsl

import httpx

from integrations.errors import MalformedPage, PagingCycle
from integrations.fetched import Fetched, State
from integrations.jsonpath import dig


class Paginator(Protocol):
    def first(self) -> State:
        """The state of the first page."""
        ...

    def request(self, state: State) -> tuple[str, dict[str, Any] | None]:
        """The URL and query parameters that fetch the page described by ``state``."""
        ...

    def payload(self, state: State) -> Any | None:
        """The JSON body POSTed for the page ``state`` describes; None: the page is a GET."""
        ...

    def check(self, response: httpx.Response, body: Any) -> None:
        """Raise when a page answered 2xx is an error all the same (GraphQL's ``errors``)."""
        ...

    def advance(
        self, state: State, response: httpx.Response, body: Any, items: list[Any]
    ) -> State | None:
        """The state of the next page, or None when ``state`` was the last one."""
        ...

    def plan(self, state: State, response: httpx.Response, body: Any, items: list[Any]
             ) -> State | None:
        """After the first page: a plan of every remaining page, when the API reveals it."""
        ...

    def planned(self, plan: State, index: int) -> State:
        """The state of planned page ``index``."""
        ...

    def truncated(self, state: State, response: httpx.Response, body: Any, items: list[Any]
                  ) -> str | None:
        """Called on a page that ends the paging: why the API may have more than it showed
        (then the run deletes nothing), or None."""
        ...

    def total(self, response: httpx.Response, body: Any) -> int | None:
        """How many items the API says there are, when it says so."""
        ...


def fetched(paginator: Paginator, state: State, response: httpx.Response, body: Any,
            items: list[Any], *, first: bool, kept: list[Any] | None = None) -> Fetched:
    """The ``Fetched`` of one page the paginator read: next state, plan (after the first
    page), the reason it may be truncated, the total, its size. ``kept``: the items to
    land when some of ``items`` are dropped (the paging still counts them all)."""
    nxt = paginator.advance(state, response, body, items)
    plan = paginator.plan(state, response, body, items) if first and nxt is not None else None
    return Fetched(items=items if kept is None else kept, next=nxt, plan=plan,
                   truncated=paginator.truncated(state, response, body, items) if nxt is None
                   else None,
                   total=paginator.total(response, body) if first else None)


class BasePaginator(ABC):
    """A paginator of ``path`` (``params`` sent with every request, and ``limit_param`` set to
    ``limit`` when given). Sequential by default: no plan, never truncated, no total."""

    @abstractmethod
    def first(self) -> State: ...

    @abstractmethod
    def request(self, state: State) -> tuple[str, dict[str, Any] | None]: ...

    @abstractmethod
    def advance(self, state: State, response: httpx.Response, body: Any, items: list[Any]
                ) -> State | None: ...

    def payload(self, state: State) -> Any | None:
        return None  # a GET

    def check(self, response: httpx.Response, body: Any) -> None:
        return None

    def plan(self, state: State, response: httpx.Response, body: Any, items: list[Any]
             ) -> State | None:
        return None

    def planned(self, plan: State, index: int) -> State:
        raise NotImplementedError

    def truncated(self, state: State, response: httpx.Response, body: Any, items: list[Any]
                  ) -> str | None:
        return None

    def total(self, response: httpx.Response, body: Any) -> int | None:
        return None

    def __init__(
        self, *, path: str, params: dict[str, Any] | None = None, limit_param: str | None,
        limit: int,
    ) -> None:
        self.path = path
        self.params = dict(params or {})
        if limit_param:
            self.params[limit_param] = limit
        self.limit = limit
        self.limit_param = limit_param


class _OneParam(BasePaginator):
    """A paginator whose every request after the first adds one parameter, ``param``, whose
    value the state holds under ``key`` (None: the first page). The state's key is part of
    saved checkpoints: each subclass keeps its own."""

    key: str
    param: str

    def first(self) -> State:
        return {self.key: None}

    def request(self, state: State) -> tuple[str, dict[str, Any] | None]:
        params = dict(self.params)
        if state[self.key] is not None:
            params[self.param] = state[self.key]
        return self.path, params


class CursorPaginator(_OneParam):
    """Next cursor at ``cursor_path`` in the body; no cursor (or an empty one) ends it, and so
    does ``has_more_path`` false (for APIs that send a cursor on their last page too)."""

    key = "cursor"

    def __init__(self, *, cursor_path: str, cursor_param: str,
                 has_more_path: str | None = None, total_path: str | None = None,
                 total_header: str | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.cursor_path = cursor_path
        self.param = cursor_param
        self.has_more_path = has_more_path
        # A total is never a plan here (the next page is known only from this one); it
        # counts what the run must read, and how full a time window is (slices).
        self.total_path = total_path
        self.total_header = total_header

    def total(self, response: httpx.Response, body: Any) -> int | None:
        return _total(response, body, self)

    def advance(self, state: State, response: httpx.Response, body: Any, items: list[Any]
                ) -> State | None:
        if has_more(self.path, body, self.has_more_path) is False:
            return None
        cursor = dig(body, self.cursor_path)
        if cursor in (None, "") or not items:
            return None
        if cursor == state["cursor"]:
            raise PagingCycle(f"{self.path}: the cursor did not advance ({cursor!r})")
        return {"cursor": cursor}

    def truncated(self, state: State, response: httpx.Response, body: Any, items: list[Any]
                  ) -> str | None:
        """Paging stops at an empty page (an API that sends a cursor with every page would
        never end), but a cursor beside it says the API had more; with ``has_more_path``,
        has_more true says so (with or without a cursor)."""
        return _cut_short(self, body, items, "cursor", "gave a next cursor",
                          lambda: dig(body, self.cursor_path) not in (None, ""))


class LinkPaginator(BasePaginator):
    """Next URL from the Link header (rel="next"), fetched as it is: no params added."""

    def first(self) -> State:
        return {"url": None}

    def request(self, state: State) -> tuple[str, dict[str, Any] | None]:
        if state["url"] is None:
            return self.path, self.params
        return state["url"], None  # params would replace the next URL's own query string

    def advance(self, state: State, response: httpx.Response, body: Any, items: list[Any]
                ) -> State | None:
        link = response.links.get("next", {}).get("url")
        if not link:
            return None
        # No fragment: it never reaches the server, and one that changes would hide a cycle.
        url = str(response.request.url.join(link).copy_with(fragment=None))
        if url == state["url"]:
            raise PagingCycle(f"{self.path}: the Link header points at the same page ({url})")
        return {"url": url}

    def truncated(self, state: State, response: httpx.Response, body: Any, items: list[Any]
                  ) -> str | None:
        """A full page and no Link header at all: some APIs send Link only when the page
        parameter is in the request (then set it in the kind's params: ``{ page = 1 }``).
        A last page that is exactly full still carries Link (rel="prev", "first")."""
        if self.limit_param and len(items) >= self.limit and "link" not in response.headers:
            return (f"{self.path}: a full page ({len(items)} items, {self.limit_param}="
                    f"{self.limit}) came without a Link header, so more pages may exist")
        return None

    def plan(self, state: State, response: httpx.Response, body: Any, items: list[Any]
             ) -> State | None:
        """From rel="next" and rel="last": the query parameter that counts pages, its step
        (1 for a page number; the page size where it counts items, as ServiceNow's
        ``sysparm_offset`` does), and how many pages there are."""
        links = response.links
        if "next" not in links or "last" not in links:
            return None
        nxt = httpx.URL(str(response.request.url.join(links["next"]["url"])))
        last = httpx.URL(str(response.request.url.join(links["last"]["url"])))
        a, b = dict(parse_qsl(nxt.query.decode())), dict(parse_qsl(last.query.decode()))
        counters = [k for k in a if k in b and a[k] != b[k] and a[k].isdigit() and b[k].isdigit()]
        if len(counters) != 1 or nxt.copy_with(query=None) != last.copy_with(query=None):
            return None  # not a page counter we can enumerate: follow the links instead
        param = counters[0]
        first, final = int(a[param]), int(b[param])
        here = response.request.url.params.get(param)
        if here is not None and here.isdigit():
            step = first - int(here)
        elif first in (1, 2):  # the first page was asked without its number (1, or 0)
            step = 1
        elif first == len(items):  # an offset: the first page's items are the step
            step = len(items)
        else:
            return None
        if step <= 0 or (final - first) % step:
            return None
        return {"url": str(nxt), "param": param, "first": first, "step": step,
                "count": (final - first) // step + 1}

    def planned(self, plan: State, index: int) -> State:
        url = httpx.URL(plan["url"])
        value = plan["first"] + index * plan.get("step", 1)
        return {"url": str(url.copy_set_param(plan["param"], value))}


class NextUrlPaginator(BasePaginator):
    """The next page's URL at ``next_path`` in the body (``@odata.nextLink``, ``links.next``)
    or in response header ``header`` (Kinto's ``Next-Page``): absolute, or relative to the
    request's URL. It is fetched as given (the kind's params and ``limit_param`` go only on
    the first request: the API carries them into its next URLs). No URL (missing, null or
    ""), or ``has_more_path`` false, ends the paging; so does an empty page (an API that
    names a next page under every page would never end), which is truncated when it still
    names one."""

    def __init__(self, *, next_path: str | None = None, header: str | None = None,
                 has_more_path: str | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        if (next_path is None) == (header is None):
            raise ValueError("a next_url paginator takes exactly one of 'path' (a dot path in "
                             "the body) and 'header' (a response header)")
        self.next_path = next_path
        self.header = header
        self.has_more_path = has_more_path

    def first(self) -> State:
        return {"url": None}

    def request(self, state: State) -> tuple[str, dict[str, Any] | None]:
        if state["url"] is None:
            return self.path, self.params
        return state["url"], None  # params would replace the next URL's own query string

    def next_url(self, response: httpx.Response, body: Any) -> str | None:
        """The next page's absolute URL, without fragment; None when the page names none."""
        if self.header is not None:
            where, link = f"header {self.header}", response.headers.get(self.header)
        else:
            where, link = f"{self.next_path!r} in the body", dig(body, self.next_path)
        if link in (None, ""):
            return None
        if not isinstance(link, str):
            raise MalformedPage(f"{self.path}: {where} is not a URL (got {link!r})")
        try:
            # No fragment: it never reaches the server, and one that changes would hide a cycle.
            return str(response.request.url.join(link.strip()).copy_with(fragment=None))
        except httpx.InvalidURL as exc:
            raise MalformedPage(f"{self.path}: {where} is not a URL ({exc})") from exc

    def advance(self, state: State, response: httpx.Response, body: Any, items: list[Any]
                ) -> State | None:
        if has_more(self.path, body, self.has_more_path) is False or not items:
            return None
        url = self.next_url(response, body)
        if url is None:
            return None
        if url == state["url"]:
            raise PagingCycle(f"{self.path}: the next URL is the page just read ({url})")
        return {"url": url}

    def truncated(self, state: State, response: httpx.Response, body: Any, items: list[Any]
                  ) -> str | None:
        """An empty page that still names a next one, or has_more true where paging ended.
        A full last page without a next URL is not: APIs leave it out on the last page, also
        when that page happens to be full."""
        return _cut_short(self, body, items, "next URL", "named a next page",
                          lambda: self.next_url(response, body) is not None)


class KeysetPaginator(_OneParam):
    """Keyset paging (Stripe's ``starting_after``, ``id > last`` filters): the next request
    sends ``param`` = the ``field`` (a dot path) of the page's last item. With
    ``has_more_path``, paging ends when it is false; without, at a page shorter than
    ``limit`` (when ``limit_param`` is set) or an empty one. has_more true with an empty page
    ends the paging truncated (there is no last item to go on from); a last item without
    ``field`` is a MalformedPage (most likely ``field`` names the wrong key)."""

    key = "after"

    def __init__(self, *, param: str, field: str, has_more_path: str | None = None,
                 **kw: Any) -> None:
        super().__init__(**kw)
        self.param = param
        self.field = field
        self.has_more_path = has_more_path

    def advance(self, state: State, response: httpx.Response, body: Any, items: list[Any]
                ) -> State | None:
        more = has_more(self.path, body, self.has_more_path)
        if more is False or not items:
            return None
        if more is None and self.limit_param and len(items) < self.limit:
            return None  # a short page: the last
        last = dig(items[-1], self.field) if isinstance(items[-1], dict) else None
        if last is None or last == "" or isinstance(last, (dict, list)):
            raise MalformedPage(f"{self.path}: the page's last item has no {self.field!r} to "
                                f"send as {self.param} (got {last!r})")
        if last == state["after"]:
            raise PagingCycle(f"{self.path}: the page ends with the item it started after "
                              f"({self.field} {last!r})")
        return {"after": last}

    def truncated(self, state: State, response: httpx.Response, body: Any, items: list[Any]
                  ) -> str | None:
        if has_more(self.path, body, self.has_more_path) and not items:
            return (f"{self.path}: an empty page though {self.has_more_path!r} is true: "
                    "there is no last item to go on from")
        return None


class _Counted(BasePaginator):
    """Paging that counts the items served so far: ends on an empty page or at the API's
    total (``total_header``, else ``total_path``; neither: only an empty page ends it)."""

    def __init__(self, *, total_path: str | None, total_header: str | None = None,
                 **kw: Any) -> None:
        super().__init__(**kw)
        self.total_path = total_path
        self.total_header = total_header

    @abstractmethod
    def seen(self, state: State) -> int:
        """The items served before the page of ``state``."""

    @abstractmethod
    def following(self, state: State, seen: int) -> State:
        """The next page's state, ``seen`` items served before it."""

    def advance(self, state: State, response: httpx.Response, body: Any, items: list[Any]
                ) -> State | None:
        if not items:
            return None
        seen = self.seen(state) + len(items)
        total = self.total(response, body)
        if total is not None and seen >= total:
            return None
        return self.following(state, seen)

    def total(self, response: httpx.Response, body: Any) -> int | None:
        return _total(response, body, self)

    def truncated(self, state: State, response: httpx.Response, body: Any, items: list[Any]
                  ) -> str | None:
        return _short(self.path, self.seen(state) + len(items), self.total(response, body))


class OffsetPaginator(_Counted):
    """``offset_param`` grows by the items received; ends at the total or an empty page."""

    def __init__(self, *, offset_param: str, **kw: Any) -> None:
        super().__init__(**kw)
        self.offset_param = offset_param

    def first(self) -> State:
        return {"offset": 0}

    def request(self, state: State) -> tuple[str, dict[str, Any] | None]:
        return self.path, {**self.params, self.offset_param: state["offset"]}

    def seen(self, state: State) -> int:
        return int(state["offset"])

    def following(self, state: State, seen: int) -> State:
        return {"offset": seen}

    def plan(self, state: State, response: httpx.Response, body: Any, items: list[Any]
             ) -> State | None:
        total = self.total(response, body)
        if total is None or not items:
            return None
        # Step by the page size the API really served (it may cap the limit asked for).
        start, step = state["offset"] + len(items), len(items)
        return {"start": start, "step": step, "count": max(0, -(-(total - start) // step))}

    def planned(self, plan: State, index: int) -> State:
        return {"offset": plan["start"] + index * plan["step"]}


class PagePaginator(_Counted):
    """``page_param`` counts from ``first_page``; ends on an empty page or at the total."""

    def __init__(self, *, page_param: str, first_page: int, **kw: Any) -> None:
        super().__init__(**kw)
        self.page_param = page_param
        self.first_page = first_page

    def first(self) -> State:
        return {"page": self.first_page, "seen": 0}

    def request(self, state: State) -> tuple[str, dict[str, Any] | None]:
        return self.path, {**self.params, self.page_param: state["page"]}

    def seen(self, state: State) -> int:
        return int(state["seen"])

    def following(self, state: State, seen: int) -> State:
        return {"page": state["page"] + 1, "seen": seen}

    def plan(self, state: State, response: httpx.Response, body: Any, items: list[Any]
             ) -> State | None:
        total = self.total(response, body)
        if total is None or not items:
            return None
        pages = -(-total // len(items))
        return {"page": state["page"] + 1, "count": max(0, pages - 1), "size": len(items)}

    def planned(self, plan: State, index: int) -> State:
        page = plan["page"] + index
        return {"page": page, "seen": (page - self.first_page) * plan.get("size", 0)}


class SinglePage(BasePaginator):
    """No pagination: one request."""

    def __init__(self, *, path: str, params: dict[str, Any] | None = None) -> None:
        super().__init__(path=path, params=params, limit_param=None, limit=1)

    def first(self) -> State:
        return {}

    def request(self, state: State) -> tuple[str, dict[str, Any] | None]:
        return self.path, self.params

    def advance(self, state: State, response: httpx.Response, body: Any, items: list[Any]
                ) -> State | None:
        return None


# ``type`` in a paginator section of sluice.toml -> its class, built with the section's other
# keys (``integrations.rest.settings``) as keywords, beside ``path`` and ``params``.
PAGINATORS: dict[str, type[BasePaginator]] = {
    "cursor": CursorPaginator,
    "keyset": KeysetPaginator,
    "link": LinkPaginator,
    "next_url": NextUrlPaginator,
    "offset": OffsetPaginator,
    "page": PagePaginator,
    "single": SinglePage,
}


def has_more(where: str, body: Any, path: str | None) -> bool | None:
    """The boolean at ``path`` in the body (Stripe's ``has_more``); None without a path.
    Raises MalformedPage when it is not a boolean (a wrong path would else end or never end
    the paging)."""
    if path is None:
        return None
    value = dig(body, path)
    if not isinstance(value, bool):
        raise MalformedPage(f"{where}: {path!r} is not true or false in the body (got {value!r})")
    return value


def _cut_short(paginator: CursorPaginator | NextUrlPaginator, body: Any, items: list[Any],
               what: str, named: str, names_next: Callable[[], bool]) -> str | None:
    """Paging ended though the API had more: ``has_more_path`` true, or (without it) an empty
    page that still names a next one (``names_next``, asked only then)."""
    path, more = paginator.path, has_more(paginator.path, body, paginator.has_more_path)
    if more:
        return (f"{path}: paging ended (an empty page or no {what}) though "
                f"{paginator.has_more_path!r} is true")
    if more is None and not items and names_next():
        return f"{path}: an empty page still {named}"
    return None


def _short(where: str, seen: int, total: int | None) -> str | None:
    """Paging ended after ``seen`` items though the API said ``total``."""
    if total is not None and seen < total:
        return f"{where}: paging ended after {seen} items, but the API said there are {total}"
    return None


def _total(response: httpx.Response, body: Any,
           paginator: CursorPaginator | _Counted) -> int | None:
    """The total at ``total_header`` (``X-Total-Count``, as json-server and many APIs send
    it) or at ``total_path`` in the body; None when neither is configured."""
    where = paginator.path
    if paginator.total_header:
        raw = response.headers.get(paginator.total_header)
        if raw is None or not raw.strip().isdigit():
            raise MalformedPage(f"{where}: the {paginator.total_header} header is not an integer"
                                f" (got {raw!r})")
        return int(raw)
    if not paginator.total_path:
        return None
    total = dig(body, paginator.total_path)
    if not isinstance(total, int) or isinstance(total, bool):
        raise MalformedPage(f"{where}: {paginator.total_path!r} is not an integer in the body "
                            f"(got {total!r})")
    return total
