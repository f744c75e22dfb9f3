"""A fast fake API for the bulk benchmark: every page is rendered once, at start, and served as
bytes, so a page costs its server next to nothing and what is measured is the client's work.

    python ops/bench/bulkapi.py --port 8900 --items 200000

    GET /offset/issues?offset=&limit=   {"items": [...], "offset", "limit", "total"}
                                        (also startAt= / maxResults=); 500 a page by default
    GET /cursor/issues?cursor=&limit=   {"data": [...], "next_cursor": "1000"|null};
                                        1,000 a page by default
    GET /_stats                         {"requests": {path: count}, "bytes": answered};
                                        DELETE /_stats resets

Items look like GitHub issues (~0.7 KB of JSON each, nested: user, labels, assignees,
milestone, reactions). Each path has its own latency (``--offset-latency``, 20 ms;
``--cursor-latency``, 5 ms), served by a timer, not a sleeping thread. A page of another size
than the pre-rendered one is rendered when asked (and then kept). One asyncio process, HTTP/1.1
keep-alive; it prints ``ready PORT`` once it listens.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any
from urllib.parse import parse_qsl, urlsplit

LABELS = [("bug", "d73a4a"), ("enhancement", "a2eeef"), ("documentation", "0075ca"),
          ("good first issue", "7057ff"), ("help wanted", "008672")]


def at(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(1704067200 + seconds))


def user(n: int) -> dict[str, Any]:
    return {"login": f"octo{n}", "id": 1_000_000 + n, "node_id": f"MDQ6VXNlcj{n:07d}",
            "type": "User", "site_admin": False}


def issue(i: int) -> dict[str, Any]:
    """Issue ``i``: about 0.7 KB of JSON, nested as GitHub's are."""
    closed = i % 3 == 0
    return {
        "id": 2_000_000_000 + i,
        "node_id": f"I_kwDOBkz{i:09d}",
        "number": i + 1,
        "title": f"Parser drops the last field when line {i} ends in a quote",
        "state": "closed" if closed else "open",
        "locked": False,
        "user": user(i % 997),
        "labels": [{"id": 600_000 + k, "name": LABELS[k][0], "color": LABELS[k][1],
                    "default": k == 0} for k in range(i % 3)],
        "assignees": [user((i * 7) % 89)] if i % 2 else [],
        "milestone": {"id": 9_000 + i % 12, "number": i % 12 + 1, "title": f"v{i % 12}.0",
                      "state": "open", "due_on": at(86400 * (i % 12 + 30))},
        "comments": i % 17,
        "created_at": at(i * 60),
        "updated_at": at(i * 60 + 3600),
        "closed_at": at(i * 60 + 7200) if closed else None,
        "author_association": "CONTRIBUTOR",
        "reactions": {"total_count": i % 5, "+1": i % 5, "heart": 0},
        "body": f"Export rows {i}..{i + 40} to CSV: the last column is empty.",
    }


def response(body: bytes, *, status: str = "200 OK") -> bytes:
    return (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


class Pages:
    """Every page's whole HTTP response, by (path, start, limit)."""

    def __init__(self, count: int, *, offset_limit: int, cursor_limit: int) -> None:
        self.items = [json.dumps(issue(i), separators=(",", ":")) for i in range(count)]
        self.count = count
        self.cache: dict[tuple[str, int, int], bytes] = {}
        for start in range(0, count, offset_limit):
            self.get("/offset/issues", start, offset_limit)
        for start in range(0, count, cursor_limit):
            self.get("/cursor/issues", start, cursor_limit)

    def get(self, path: str, start: int, limit: int) -> bytes:
        key = (path, start, limit)
        if key not in self.cache:
            part = ",".join(self.items[start:start + limit])
            if path == "/offset/issues":
                body = (f'{{"items":[{part}],"offset":{start},"limit":{limit},'
                        f'"total":{self.count}}}')
            else:
                after = start + limit
                cursor = json.dumps(str(after)) if after < self.count else "null"
                body = f'{{"data":[{part}],"next_cursor":{cursor}}}'
            self.cache[key] = response(body.encode())
        return self.cache[key]


class Http(asyncio.Protocol):
    """One connection: requests without bodies, answered in order after the path's latency."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            length = next((int(v) for k, _, v in (x.partition(":") for x in lines[1:])
                           if k.strip().lower() == "content-length"), 0)
            self.buffer = self.buffer[length:]  # no route reads a body
            answer, delay = self.server.answer(method, target)
            assert self.transport is not None
            if delay:
                asyncio.get_running_loop().call_later(delay, self.write, answer)
            else:
                self.transport.write(answer)

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)


class Server:
    def __init__(self, pages: Pages, a: argparse.Namespace) -> None:
        self.pages = pages
        self.latency = {"/offset/issues": a.offset_latency, "/cursor/issues": a.cursor_latency}
        self.defaults = {"/offset/issues": a.offset_limit, "/cursor/issues": a.cursor_limit}
        self.requests: dict[str, int] = {}
        self.bytes = 0

    def answer(self, method: str, target: str) -> tuple[bytes, float]:
        url = urlsplit(target)
        query = dict(parse_qsl(url.query))
        if url.path == "/_stats":
            if method == "DELETE":
                self.requests, self.bytes = {}, 0
            return response(json.dumps({"requests": self.requests, "bytes": self.bytes}
                                       ).encode()), 0.0
        if url.path not in self.latency or method != "GET":
            return response(b'{"error":"not found"}', status="404 Not Found"), 0.0
        self.requests[url.path] = self.requests.get(url.path, 0) + 1
        limit = int(query.get("limit", query.get("maxResults", self.defaults[url.path])))
        start = int(query.get("offset", query.get("startAt", query.get("cursor") or 0)))
        page = self.pages.get(url.path, start, limit)
        self.bytes += len(page)
        return page, self.latency[url.path]


async def serve(a: argparse.Namespace) -> None:
    pages = Pages(a.items, offset_limit=a.offset_limit, cursor_limit=a.cursor_limit)
    server = Server(pages, a)
    loop = asyncio.get_running_loop()
    listening = await loop.create_server(lambda: Http(server), "127.0.0.1", a.port, backlog=256)
    print(f"ready {a.port}", flush=True)
    async with listening:
        await listening.serve_forever()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--items", type=int, default=200_000)
    p.add_argument("--offset-limit", type=int, default=500)
    p.add_argument("--cursor-limit", type=int, default=1000)
    p.add_argument("--offset-latency", type=float, default=0.020)
    p.add_argument("--cursor-latency", type=float, default=0.005)
    asyncio.run(serve(p.parse_args()))


if __name__ == "__main__":
    main()
