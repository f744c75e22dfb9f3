"""A local fake third-party API (and a fake HTTP bulk sink) on loopback.

Used by the tests, the benchmark and the standalone demo. Seven pagination styles over the
same items of a kind:

    GET /cursor/{kind}?cursor=&limit=        {"data": [...], "next_cursor": "200"|null,
                                              "total_count": N}
    GET /link/{kind}?page=&per_page=         [...] with Link: <...>; rel="next", rel="last"
    GET /linkq/{kind}?page=&per_page=        the same, but Link only when ``page`` was sent
    GET /offset/{kind}?startAt=&maxResults=  {"values": [...], "startAt", "maxResults", "total"}
    GET /page/{kind}?page=&per_page=         {"items": [...], "total": N}
                                             (offset and page: also X-Total-Count: N)
    GET /nexturl/{kind}?skip=&top=           {"value": [...], "@odata.nextLink": absolute URL,
                                              "links": {"next": the same, relative: "KIND?.."}}
    GET /nexthdr/{kind}?_token=&_limit=      {"data": [...]} with Next-Page: absolute URL (Kinto)
    GET /keyset/{kind}?starting_after=&limit=  {"data": [...], "has_more": bool} (Stripe); an
                                             unknown starting_after answers 400
                                             (next URLs keep the request's other parameters)
    GET /sub/{kind}/{parent}?cursor=&limit=  one parent's children, as /cursor pages
    GET /one/{kind}/{id}                     one item by its id (404: none), a webhook follow-up
    POST /sink/{kind}  {"entities": [...]}   the HTTP target's endpoint; GET /sink/{kind} lists

Items with an ``updated_at`` (``set_timed_items``, ``change``, ``add``) answer two more
query parameters, in every style: ``since=<ISO time>`` keeps those updated at or after it,
and ``sort=updated&direction=desc`` lists the newest first (as GitHub's pulls do). A kind
made with ``epoch_ms=True`` has its times as epoch milliseconds, and ``since`` is one too.
Every style also filters by a range of any field: ``updated_at[gte]=…&updated_at[lt]=…``
(``gt`` and ``lte`` too), as Stripe's ``created[gte]`` does: a time window of its own.
``remove`` turns items into deletion tombstones (``{"id", "deleted": true, "updated_at"}``),
which only a ``since`` read lists: a full read leaves them out, as such APIs do.

Faults are scripted (``FakeAPI.fail``): answer a matching request with a given status, headers
and body a given number of times. ``sink_down`` makes the sink answer 503. ``totals`` makes the
offset and page styles report another total than they hold; ``trickle`` sends the answers of a
path prefix one byte at a time, this many seconds apart (a server that never quite answers).
``hold`` keeps the GETs of a path prefix waiting until the test releases them.
With ``rate_limit`` (requests per second, a token bucket of one second's burst) a GET over
the limit answers 429 with ``Retry-After``; every GET carries ``X-RateLimit-Remaining`` and
``X-RateLimit-Reset`` (epoch seconds, as GitHub does). ``exhaust`` makes one answer say the
budget is gone for a while.

With ``auth`` (a check from ``integrations.fakeauth``: bearer, basic, API key, a bearer token
checked by OAuth 2.0 introspection) every GET but the sink's and ``/_stats`` needs the
credentials it checks; else 401 with ``WWW-Authenticate``.

    python -m integrations.fakeapi --port 8900 --items issue=1000,user=50 --latency 0.05
"""

from __future__ import annotations

import argparse
import contextlib
import json
import operator
import re
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import MappingProxyType
from typing import Any
from urllib.parse import SplitResult, parse_qsl, urlencode, urlsplit

from integrations.fakeauth import AuthCheck

HOLD_SECONDS = 120.0  # a hold a test never released lets its requests go after this


@dataclass
class Fault:
    path: str  # a request whose path starts with this ...
    when: dict[str, str]  # ... and whose query has these values
    status: int
    headers: dict[str, str]
    body: bytes
    times: int  # how many more requests it answers


@dataclass
class Hold:
    """GETs whose path starts with ``path``, after the first ``after`` of them, wait until
    ``release()``: a request the test knows to be in flight while it acts (``FakeAPI.hold``)."""

    path: str
    after: int
    seen: int = 0
    arrived: threading.Event = field(default_factory=threading.Event)  # one is waiting
    released: threading.Event = field(default_factory=threading.Event)

    def release(self) -> None:
        self.released.set()


@dataclass
class State:
    items: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # child kind -> parent id -> its children (GET /sub/KIND/PARENT, cursor pages)
    children: dict[str, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    sink: dict[str, dict[str, Any]] = field(default_factory=dict)  # kind -> id -> entity
    sink_received: dict[str, int] = field(default_factory=dict)  # "kind/id" -> times posted
    auth_seen: set[str] = field(default_factory=set)  # Authorization headers received
    exhaust: dict[str, float] = field(default_factory=dict)  # path prefix -> seconds (one-shot)
    delays: dict[str, float] = field(default_factory=dict)  # path prefix -> extra seconds
    holds: list[Hold] = field(default_factory=list)
    sink_writing: int = 0  # sink POSTs being handled right now
    first_write: float | None = None  # when the sink first stored an entity (time.time())
    last_write: float | None = None
    sink_down: int = 0  # answer this many sink POSTs with 503 (-1: until told otherwise)
    totals: dict[str, int] = field(default_factory=dict)  # kind -> the total to report
    trickle: dict[str, float] = field(default_factory=dict)  # path prefix -> seconds per byte
    params_seen: list[dict[str, str]] = field(default_factory=list)  # every GET's query
    epoch_ms: set[str] = field(default_factory=set)  # kinds whose times are epoch ms
    log: list[tuple[float, str, str, int]] = field(default_factory=list)  # t, method, path, status
    # (items, length, ranges) -> the items within them (``ranged``); cleared on every change
    ranged: dict[tuple[Any, ...], list[dict[str, Any]]] = field(default_factory=dict)
    # kinds with tombstones (``remove``): only their pages are filtered, as looking through
    # every item for one made a page of a 1,000,000-item kind cost the server 50 ms
    tombstoned: set[str] = field(default_factory=set)


def make_items(kind: str, count: int) -> list[dict[str, Any]]:
    return [{"id": f"{kind}-{i}", "title": f"{kind} number {i}", "n": i} for i in range(count)]


def at(seconds: float) -> str:
    """An ISO-8601 UTC time, ``seconds`` after 2024-01-01T00:00:00Z."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(1704067200 + seconds))


def at_ms(seconds: float) -> int:
    """``at(seconds)`` as epoch milliseconds."""
    return (1704067200 + round(seconds)) * 1000


def _later(value: Any, since: str) -> bool:
    """``value`` is at or after ``since``: as numbers when both are (epoch milliseconds),
    else as text (ISO times of one spelling)."""
    if isinstance(value, int) and since.lstrip("-").isdigit():
        return value >= int(since)
    return str(value if value is not None else "") >= since


_RANGE = re.compile(r"^(\w+)\[(gte|gt|lte|lt)\]$")
_COMPARE = {"gte": operator.ge, "gt": operator.gt, "lte": operator.le, "lt": operator.lt}


def _in_range(value: Any, op: str, bound: str) -> bool:
    """``value op bound``: as numbers when the value is one (epoch milliseconds), else as
    text (ISO times of one spelling). An item without the field is in no range."""
    if value is None:
        return False
    if isinstance(value, int) and bound.lstrip("-").isdigit():
        return bool(_COMPARE[op](value, int(bound)))
    return bool(_COMPARE[op](str(value), bound))


def ranged(items: list[dict[str, Any]], query: dict[str, str],
           cache: dict[tuple[Any, ...], list[dict[str, Any]]] | None = None
           ) -> list[dict[str, Any]]:
    """The items within the ranges that ``FIELD[gte]``, ``[gt]``, ``[lte]`` and ``[lt]`` ask
    for. ``cache`` keeps what a window's first page found for its next pages (whoever changes
    the items clears it; a list cut short is another key)."""
    ranges = tuple(sorted((m[1], m[2], v) for k, v in query.items()
                          if (m := _RANGE.match(k))))
    if not ranges:
        return items
    key = (id(items), len(items), ranges)
    if cache is not None and key in cache:
        return cache[key]
    for name, op, bound in ranges:
        items = [i for i in items if _in_range(i.get(name), op, bound)]
    if cache is not None:
        if len(cache) > 1000:
            cache.clear()
        cache[key] = items
    return items


def window(items: list[dict[str, Any]], query: dict[str, str],
           cache: dict[tuple[Any, ...], list[dict[str, Any]]] | None = None, *,
           tombstones: bool = True) -> list[dict[str, Any]]:
    """The items a ``since`` asks for (tombstones only then), within the ranges the query
    asks for (``ranged``), in the order a ``sort=updated`` asks for. ``tombstones`` False:
    the items hold none (so a full read need not look for them)."""
    items = ranged(items, query, cache)
    if "since" in query:
        since = query["since"]
        items = [i for i in items if _later(i.get("updated_at"), since)]
    elif tombstones:
        items = [i for i in items if not i.get("deleted")]
    if query.get("sort") == "updated":
        items = sorted(items, key=lambda i: str(i.get("updated_at", "")),
                       reverse=query.get("direction", "desc") == "desc")
    return items


def link_page(items: list[Any], base: str, query: dict[str, str], *, default_per: int = 30,
              max_per: int = 100) -> tuple[list[Any], dict[str, str]]:
    """One page of ``items`` by ``page``/``per_page``, with RFC 8288 Link headers (next, last)."""
    page, per = int(query.get("page", 1)), min(max_per, int(query.get("per_page", default_per)))
    last = max(1, -(-len(items) // per))
    others = {k: v for k, v in query.items() if k not in ("page", "per_page")}
    links = []
    if page < last:
        links.append(f'<{base}?{urlencode({**others, "page": page + 1, "per_page": per})}>; '
                     'rel="next"')
    links.append(f'<{base}?{urlencode({**others, "page": last, "per_page": per})}>; rel="last"')
    return items[(page - 1) * per:page * per], {"Link": ", ".join(links)}


class Handler(BaseHTTPRequestHandler):
    server: Server
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else headers and body wait on delayed ACKs (~40 ms)

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        headers = {"Content-Type": "application/json", **(headers or {})}
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        # Logged before the answer goes out: a client that sends its next requests as soon as
        # it has this answer finds this one in the log first.
        with self.server.lock:
            self.server.state.log.append((time.time(), self.command, self.path, status))
        pause = next((v for k, v in self.server.state.trickle.items()
                      if urlsplit(self.path).path.startswith(k)), 0.0)
        if pause:
            for i in range(len(body)):
                self.wfile.write(body[i:i + 1])
                self.wfile.flush()
                time.sleep(pause)
        else:
            self.wfile.write(body)

    # Headers every answer of this request carries (the rate limit's); set per GET.
    extra_headers: Mapping[str, str] = MappingProxyType({})

    def _json(self, obj: Any, headers: dict[str, str] | None = None) -> None:
        self._send(200, json.dumps(obj).encode(), {**self.extra_headers, **(headers or {})})

    def _fault(self, path: str, query: dict[str, str]) -> Fault | None:
        with self.server.lock:
            for fault in self.server.state.faults:
                if fault.times and path.startswith(fault.path) and all(
                        query.get(k) == v for k, v in fault.when.items()):
                    fault.times -= 1
                    return fault
        return None

    def _scripted(self) -> tuple[SplitResult, dict[str, str]] | None:
        """The request's URL and query, or None when a scripted fault already answered it
        (the start of a named fake's GET: GitHub, Jira)."""
        self.extra_headers = {}
        url = urlsplit(self.path)
        query = dict(parse_qsl(url.query))
        fault = self._fault(url.path, query)
        if fault:
            self._send(fault.status, fault.body, fault.headers)
            return None
        return url, query

    def _held(self, path: str) -> None:
        """Wait while a hold on ``path`` is not released (at most HOLD_SECONDS)."""
        with self.server.lock:
            hold = next((h for h in self.server.state.holds if path.startswith(h.path)), None)
            if hold is None:
                return
            hold.seen += 1
            if hold.seen <= hold.after:
                return
        hold.arrived.set()
        hold.released.wait(HOLD_SECONDS)

    def do_GET(self) -> None:
        self.extra_headers = {}
        url = urlsplit(self.path)
        query = dict(parse_qsl(url.query))
        with self.server.lock:
            self.server.state.params_seen.append(query)
            if "Authorization" in self.headers:
                self.server.state.auth_seen.add(self.headers["Authorization"])
        delay = self.server.latency + sum(
            s for p, s in self.server.state.delays.items() if url.path.startswith(p))
        if delay:
            time.sleep(delay)
        self._held(url.path)
        if self._refused(url.path, query):
            return None
        fault = self._fault(url.path, query)
        if fault:
            return self._send(fault.status, fault.body, fault.headers)
        parts = url.path.strip("/").split("/")
        if len(parts) == 3:
            return self._nested(*parts, path=url.path, query=query)
        if len(parts) != 2:
            return self._send(404, b'{"error": "not found"}')
        style, kind = parts
        if style == "sink":
            with self.server.lock:
                return self._json(list(self.server.state.sink.get(kind, {}).values()))
        if style == "_stats":  # GET /_stats/KIND: what the sink holds and how the API answered
            return self._stats(kind)
        if self._limited(url.path):
            return None
        items = self.server.state.items.get(kind)
        if items is None:
            return self._send(404, b'{"error": "no such kind"}')
        return self._page(style, kind, items, url.path, query)

    def _refused(self, path: str, query: dict[str, str]) -> bool:
        """True when the API's ``auth`` check refused the request (answered 401); the
        sink and ``/_stats`` are the tests' own and need nothing."""
        check = self.server.auth
        if check is None or path.startswith(("/sink/", "/_stats/")):
            return False
        challenge = check({k.lower(): v for k, v in self.headers.items()}, query)
        if challenge is None:
            return False
        self._send(401, b'{"message": "Requires authentication"}',
                   {"WWW-Authenticate": challenge})
        return True

    def _nested(self, style: str, kind: str, key: str, *, path: str, query: dict[str, str]
                ) -> None:
        """GET /sub/KIND/PARENT: one parent's children; GET /one/KIND/ID: one item."""
        if style not in ("sub", "one"):
            return self._send(404, b'{"error": "not found"}')
        if self._limited(path):
            return None
        if style == "sub":
            children = self.server.state.children.get(kind, {}).get(key)
            if children is None:
                return self._send(404, b'{"error": "no such parent"}')
            return self._page("cursor", kind, children, path, query)
        with self.server.lock:
            found = [i for i in self.server.state.items.get(kind, []) if str(i.get("id")) == key]
        return self._json(found[0]) if found else self._send(404, b'{"error": "gone"}')

    def _stats(self, kind: str) -> None:
        with self.server.lock:
            st = self.server.state
            statuses: dict[str, int] = {}
            for _, method, _, status in st.log:
                if method == "GET":
                    statuses[str(status)] = statuses.get(str(status), 0) + 1
            self._json({"entities": len(st.sink.get(kind, {})),
                        "first_write": st.first_write, "last_write": st.last_write,
                        "get_statuses": statuses})

    def _limited(self, path: str) -> bool:
        """Take a token of the rate limit: True when the request was answered 429; else the
        rate-limit headers (or an exhausted budget) go with the answer."""
        limited = self.server.take_token()
        if limited is not None:
            status, headers = limited
            if status == 429:
                self._send(429, b'{"message": "API rate limit exceeded"}', headers)
                return True
            self.extra_headers = headers
        with self.server.lock:
            for prefix, seconds in list(self.server.state.exhaust.items()):
                if path.startswith(prefix):
                    del self.server.state.exhaust[prefix]
                    self.extra_headers = {"X-RateLimit-Remaining": "0",
                                          "X-RateLimit-Reset": f"{time.time() + seconds:.3f}"}
        return False

    def _page(self, style: str, kind: str, items: list[dict[str, Any]], path: str,
              query: dict[str, str]) -> None:
        """One page of ``items`` in a pagination style."""
        items = window(items, query, self.server.state.ranged,
                       tombstones=kind in self.server.state.tombstoned)
        if style == "cursor":
            start, limit = int(query.get("cursor", 0)), int(query.get("limit", 100))
            nxt = start + limit
            return self._json({"data": items[start:nxt], "total_count": len(items),
                               "next_cursor": str(nxt) if nxt < len(items) else None})
        if style in ("link", "linkq"):
            page_items, headers = link_page(items, f"http://{self.headers['Host']}{path}",
                                            query, max_per=10_000)
            if style == "linkq" and "page" not in query:
                headers = {}
            return self._json(page_items, headers)
        if style in ("nexturl", "nexthdr", "keyset"):
            return self._keyed_page(style, items, path, query)
        total = self.server.state.totals.get(kind, len(items))
        if style == "offset":
            start, per = int(query.get("startAt", 0)), int(query.get("maxResults", 50))
            return self._json({"values": items[start:start + per], "startAt": start,
                               "maxResults": per, "total": total},
                              {"X-Total-Count": str(total)})
        if style == "page":
            page, per = int(query.get("page", 1)), int(query.get("per_page", 30))
            return self._json({"items": items[(page - 1) * per:page * per], "total": total},
                              {"X-Total-Count": str(total)})
        return self._send(404, b'{"error": "no such style"}')

    def _keyed_page(self, style: str, items: list[dict[str, Any]], path: str,
                    query: dict[str, str]) -> None:
        """A page of the styles that name where the next page starts (a next URL, a key)."""
        if style == "keyset":
            after, limit = query.get("starting_after"), int(query.get("limit", 10))
            ids = [str(i["id"]) for i in items]
            if after is not None and after not in ids:
                return self._send(400, b'{"error": "no such object: starting_after"}')
            start = 0 if after is None else ids.index(after) + 1
            return self._json({"data": items[start:start + limit],
                               "has_more": start + limit < len(items)})
        skip_param, size_param, default = (("skip", "top", 25) if style == "nexturl"
                                           else ("_token", "_limit", 25))
        start, size = int(query.get(skip_param, 0)), int(query.get(size_param, default))
        page = items[start:start + size]
        following = None  # relative to the request's URL: "KIND?skip=..."
        if start + size < len(items):
            following = f"{path.rsplit('/', 1)[1]}?{urlencode({**query, skip_param: start + size})}"
        absolute = (f"http://{self.headers['Host']}{path.rsplit('/', 1)[0]}/{following}"
                    if following else None)
        if style == "nexturl":
            return self._json({"value": page, "@odata.nextLink": absolute,
                               "links": {"next": following}})
        return self._json({"data": page}, {"Next-Page": absolute} if absolute else {})

    def do_DELETE(self) -> None:
        """DELETE /_stats: forget the sink's entities, the log and the write times."""
        with self.server.lock:
            st = self.server.state
            st.sink.clear()
            st.sink_received.clear()
            st.log.clear()
            st.first_write = st.last_write = None
        self._json({"reset": True})

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with self.server.lock:
            self.server.state.sink_writing += 1
        try:
            self._post(url.path, body)
        finally:
            with self.server.lock:
                self.server.state.sink_writing -= 1

    def _post(self, path: str, body: bytes) -> None:
        if self.server.write_latency:
            time.sleep(self.server.write_latency)
        fault = self._fault(path, {})
        if fault:
            return self._send(fault.status, fault.body, fault.headers)
        parts = path.strip("/").split("/")
        if len(parts) != 2 or parts[0] != "sink":
            return self._send(404, b'{"error": "not found"}')
        state = self.server.state
        with self.server.lock:
            if state.sink_down:
                state.sink_down -= 1 if state.sink_down > 0 else 0
                down = True
            else:
                down = False
        if down:
            return self._send(503, b'{"error": "sink down"}')
        try:
            entities = json.loads(body)["entities"]
            assert all("identifier" in e for e in entities)
        except (ValueError, KeyError, TypeError, AssertionError):
            return self._send(
                400, b'{"error": "expected {\\"entities\\": [{\\"identifier\\"...}]}"}')
        with self.server.lock:
            now = time.time()
            state.first_write = state.first_write or now
            state.last_write = now
            for e in entities:
                state.sink.setdefault(parts[1], {})[e["identifier"]] = e
                key = f"{parts[1]}/{e['identifier']}"
                state.sink_received[key] = state.sink_received.get(key, 0) + 1
        return self._json({"accepted": len(entities)})


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up (a cancelled request) is no server error; others are."""
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    def __init__(self, address: tuple[str, int], *, latency: float, write_latency: float,
                 rate_limit: float | None = None, handler: type[Handler] | None = None,
                 auth: AuthCheck | None = None):
        super().__init__(address, handler or Handler)
        self.state = State()
        self.auth = auth
        self.lock = threading.RLock()  # handlers answer while holding it
        self.latency = latency
        self.write_latency = write_latency
        self.rate_limit = rate_limit
        self._tokens = rate_limit or 0.0
        self._stamp = time.monotonic()

    def take_token(self) -> tuple[int, dict[str, str]] | None:
        """Spend a token of the rate limit: None without a limit, else (200 or 429, headers)."""
        if not self.rate_limit:
            return None
        with self.lock:
            now = time.monotonic()
            self._tokens = min(self.rate_limit,
                               self._tokens + (now - self._stamp) * self.rate_limit)
            self._stamp = now
            ok = self._tokens >= 1
            if ok:
                self._tokens -= 1
            refill = (1 - self._tokens) / self.rate_limit if self._tokens < 1 else 0.0
        headers = {"X-RateLimit-Limit": str(int(self.rate_limit)),
                   "X-RateLimit-Remaining": str(int(self._tokens)),
                   "X-RateLimit-Reset": f"{time.time() + refill:.3f}"}
        if ok:
            return 200, headers
        return 429, {**headers, "Retry-After": str(max(1, round(refill)))}


class FakeAPI:
    """The fake API in a background thread: ``with FakeAPI() as api: api.url``; with
    ``auth`` (or ``require``), its GETs need the credentials that check asks for."""

    handler: type[Handler] = Handler

    def __init__(self, *, port: int = 0, latency: float = 0.0, write_latency: float = 0.0,
                 rate_limit: float | None = None, auth: AuthCheck | None = None):
        self.server = Server(("127.0.0.1", port), latency=latency, write_latency=write_latency,
                             rate_limit=rate_limit, handler=self.handler, auth=auth)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                       daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def state(self) -> State:
        return self.server.state

    def require(self, auth: AuthCheck | None) -> None:
        """From now on, GETs need what ``auth`` checks (None: nothing)."""
        self.server.auth = auth

    @contextlib.contextmanager
    def trickling(self, path: str, seconds_a_byte: float) -> Iterator[None]:
        """Within the block, answers under ``path`` are sent a byte at a time, this far apart."""
        self.state.trickle[path] = seconds_a_byte
        try:
            yield
        finally:
            self.state.trickle.pop(path, None)

    def set_items(self, kind: str, count: int) -> list[dict[str, Any]]:
        self.state.ranged.clear()
        self.state.items[kind] = make_items(kind, count)
        return self.state.items[kind]

    def set_timed_items(self, kind: str, count: int, *, epoch_ms: bool = False
                        ) -> list[dict[str, Any]]:
        """Items with an ``updated_at``: item i at ``at(i)`` (``at_ms(i)`` with ``epoch_ms``)."""
        items = make_items(kind, count)
        if epoch_ms:
            self.state.epoch_ms.add(kind)
        else:
            self.state.epoch_ms.discard(kind)
        for i, item in enumerate(items):
            item["updated_at"] = self._at(kind, i)
        self.state.ranged.clear()
        self.state.items[kind] = items
        return items

    def _at(self, kind: str, seconds: float) -> str | int:
        return at_ms(seconds) if kind in self.state.epoch_ms else at(seconds)

    def remove(self, kind: str, indices: list[int], when: float) -> None:
        """Items ``indices`` of ``kind`` are deleted at ``when``: each becomes a tombstone."""
        with self.server.lock:
            self.state.ranged.clear()
            self.state.tombstoned.add(kind)
            for i in indices:
                item = self.state.items[kind][i]
                self.state.items[kind][i] = {"id": item["id"], "deleted": True,
                                             "updated_at": self._at(kind, when)}

    def set_children(self, kind: str, parents: list[dict[str, Any]], per_parent: int
                     ) -> list[dict[str, Any]]:
        """``per_parent`` children of ``kind`` for each parent (by its ``id``); all of them."""
        made = []
        with self.server.lock:
            table = self.state.children[kind] = {}
            for parent in parents:
                table[str(parent["id"])] = [
                    {"id": f"{kind}-{parent['id']}-{j}", "body": f"{kind} {j} of {parent['id']}"}
                    for j in range(per_parent)]
                made += table[str(parent["id"])]
        return made

    def change(self, kind: str, indices: list[int], when: float) -> None:
        """Items ``indices`` of ``kind`` change at ``at(when)`` (their title says so)."""
        with self.server.lock:
            self.state.ranged.clear()
            for i in indices:
                item = self.state.items[kind][i]
                item["updated_at"] = self._at(kind, when)
                item["title"] = f"{item['title']} (changed at {when:g})"

    def add(self, kind: str, count: int, when: float) -> list[dict[str, Any]]:
        """``count`` new items of ``kind``, created at ``at(when)``."""
        with self.server.lock:
            self.state.ranged.clear()
            items = self.state.items[kind]
            new = make_items(kind, len(items) + count)[len(items):]
            for item in new:
                item["updated_at"] = self._at(kind, when)
            items += new
        return new

    def fail(self, path: str, status: int, *, times: int = 1, when: dict[str, str] | None = None,
             headers: dict[str, str] | None = None, body: bytes | str = b'{"error": "injected"}'
             ) -> None:
        body = body.encode() if isinstance(body, str) else body
        with self.server.lock:
            self.state.faults.append(Fault(path, when or {}, status, headers or {}, body, times))

    def hold(self, path: str, *, after: int = 0) -> Hold:
        """From now on, GETs of ``path`` (a prefix) after the first ``after`` wait until the
        hold is released; ``hold.arrived`` is set once one waits."""
        hold = Hold(path, after)
        with self.server.lock:
            self.state.holds.append(hold)
        return hold

    def requests(self, path: str = "") -> list[tuple[float, str, str, int]]:
        with self.server.lock:
            return [r for r in self.state.log if urlsplit(r[2]).path.startswith(path)]

    def start(self) -> FakeAPI:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> FakeAPI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Sluice's fake third-party API")
    p.add_argument("--port", type=int, default=8900)
    p.add_argument("--items", default="issue=1000", help="kind=count,...")
    p.add_argument("--latency", type=float, default=0.0, help="seconds per GET")
    p.add_argument("--write-latency", type=float, default=0.0, help="seconds per sink POST")
    p.add_argument("--rate-limit", type=float, default=None, help="GETs per second")
    args = p.parse_args(argv)
    api = FakeAPI(port=args.port, latency=args.latency, write_latency=args.write_latency,
                  rate_limit=args.rate_limit)
    for spec in filter(None, args.items.split(",")):
        kind, count = spec.split("=")
        api.set_items(kind, int(count))
    print(f"fake API on {api.url}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        api.server.serve_forever()


if __name__ == "__main__":
    main()
