"""One paginator interface (after dlt's): build a request from a state, read the next state
from the response. States are small JSON dicts, so a run can stop after any page and resume.

    state = paginator.first()
    while state is not None:
        url, params = paginator.request(state)
        response, body = await get_json(client, url, params=params)
        items = ...                         # from the body
        state = paginator.advance(state, response, body, items)

Four styles: ``cursor`` (a token in the body), ``link`` (RFC 8288 Link header, rel="next"),
``offset`` (offset + limit, optional total), ``page`` (page number + size, optional total); and
``single`` (one request). ``PAGINATORS`` maps each style's name (the ``type`` of a paginator in
sluice.toml) to its class; its constructor takes that section's keys. An integration with an
API of its own pages subclasses ``BasePaginator``.

When the first page reveals how many pages there are (rel="last", a total), ``plan`` returns a
small JSON plan of every remaining page and ``planned(plan, i)`` the state of page i, so the
pager can fetch them concurrently.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Protocol
from urllib.parse import parse_qsl

import httpx

from integrations.base import Fetched, State
from integrations.errors import MalformedPage, PagingCycle


def dig(body: Any, path: str | None) -> Any:
    """Follow a dot path (``"data.items"``) into a decoded JSON body; None when it is absent."""
    if not path:
        return body
    node = body
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


class Paginator(Protocol):
    def first(self) -> State:
        """The state of the first page."""
        ...

    def request(self, state: State) -> tuple[str, dict[str, Any] | None]:
        """The URL and query parameters that fetch the page described by ``state``."""
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


class CursorPaginator(BasePaginator):
    """Next cursor at ``cursor_path`` in the body; no cursor (or an empty one) ends it."""

    def __init__(self, *, cursor_path: str, cursor_param: str, **kw: Any) -> None:
        super().__init__(**kw)
        self.cursor_path = cursor_path
        self.cursor_param = cursor_param

    def first(self) -> State:
        return {"cursor": None}

    def request(self, state: State) -> tuple[str, dict[str, Any] | None]:
        params = dict(self.params)
        if state["cursor"] is not None:
            params[self.cursor_param] = state["cursor"]
        return self.path, params

    def advance(self, state: State, response: httpx.Response, body: Any, items: list[Any]
                ) -> State | None:
        cursor = dig(body, self.cursor_path)
        if cursor in (None, "") or not items:
            return None
        if cursor == state["cursor"]:
            raise PagingCycle(f"{self.path}: the cursor did not advance ({cursor!r})")
        return {"cursor": cursor}

    def truncated(self, state: State, response: httpx.Response, body: Any, items: list[Any]
                  ) -> str | None:
        """Paging stops at an empty page (an API that sends a cursor with every page would
        never end), but a cursor beside it says the API had more."""
        if not items and dig(body, self.cursor_path) not in (None, ""):
            return f"{self.path}: an empty page still gave a next cursor"
        return None


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
        """From rel="next" and rel="last": the query parameter that counts pages, and how many."""
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
        return {"url": str(nxt), "param": param, "first": first, "count": final - first + 1}

    def planned(self, plan: State, index: int) -> State:
        url = httpx.URL(plan["url"])
        return {"url": str(url.copy_set_param(plan["param"], plan["first"] + index))}


class OffsetPaginator(BasePaginator):
    """``offset_param`` grows by the items received; ends at ``total_path`` or an empty page."""

    def __init__(self, *, offset_param: str, total_path: str | None,
                 total_header: str | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.offset_param = offset_param
        self.total_path = total_path
        self.total_header = total_header

    def first(self) -> State:
        return {"offset": 0}

    def request(self, state: State) -> tuple[str, dict[str, Any] | None]:
        return self.path, {**self.params, self.offset_param: state["offset"]}

    def advance(self, state: State, response: httpx.Response, body: Any, items: list[Any]
                ) -> State | None:
        if not items:
            return None
        offset = state["offset"] + len(items)
        total = self.total(response, body)
        if total is not None and offset >= total:
            return None
        return {"offset": offset}

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

    def total(self, response: httpx.Response, body: Any) -> int | None:
        return _total(response, body, self)

    def truncated(self, state: State, response: httpx.Response, body: Any, items: list[Any]
                  ) -> str | None:
        return _short(self.path, state["offset"] + len(items), self.total(response, body))


class PagePaginator(BasePaginator):
    """``page_param`` counts from ``first_page``; ends on an empty page or past ``total_path``."""

    def __init__(self, *, page_param: str, first_page: int, total_path: str | None,
                 total_header: str | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.page_param = page_param
        self.first_page = first_page
        self.total_path = total_path
        self.total_header = total_header

    def first(self) -> State:
        return {"page": self.first_page, "seen": 0}

    def request(self, state: State) -> tuple[str, dict[str, Any] | None]:
        return self.path, {**self.params, self.page_param: state["page"]}

    def advance(self, state: State, response: httpx.Response, body: Any, items: list[Any]
                ) -> State | None:
        if not items:
            return None
        seen = state["seen"] + len(items)
        total = self.total(response, body)
        if total is not None and seen >= total:
            return None
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

    def total(self, response: httpx.Response, body: Any) -> int | None:
        return _total(response, body, self)

    def truncated(self, state: State, response: httpx.Response, body: Any, items: list[Any]
                  ) -> str | None:
        return _short(self.path, state["seen"] + len(items), self.total(response, body))


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
    "link": LinkPaginator,
    "offset": OffsetPaginator,
    "page": PagePaginator,
    "single": SinglePage,
}


def _short(where: str, seen: int, total: int | None) -> str | None:
    """Paging ended after ``seen`` items though the API said ``total``."""
    if total is not None and seen < total:
        return f"{where}: paging ended after {seen} items, but the API said there are {total}"
    return None


def _total(response: httpx.Response, body: Any, paginator: OffsetPaginator | PagePaginator
           ) -> int | None:
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
