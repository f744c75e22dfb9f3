"""Real open-source API servers, as processes on free loopback ports, for the tests that sync
them by configuration alone (tests/integration/test_real_apis.py).

- ``KintoServer``: Mozilla's Kinto (memory backend, HTTP basic auth). Its records endpoint pages
  with a ``Next-Page`` response header, filters with ``_since`` (epoch milliseconds, exclusive)
  and then answers deletion tombstones. Every request it serves is in its own JSON request log.
- ``DatasetteServer``: Datasette over a SQLite file the test writes. Its table JSON pages with
  ``next_url`` in the body, and filters ``id__gt`` (keyset paging).

Each is seeded and read back through its own API (Datasette, which is read-only over HTTP, is
changed through its SQLite file, which it serves live). Nothing here knows Sluice: what the
tests compare Sluice's target with is what the server says.
"""

from __future__ import annotations

import json
import sqlite3
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx

from tasks.operator.redisserver import free_port
from tasks.operator.supervisor import Child
from tests.support.served import Served

# The harness's own requests say so, and ``KintoServer.served`` leaves them out: what it lists
# is what Sluice asked.
HARNESS = "sluice-tests-harness"
BIN = Path(sys.executable).parent  # the virtualenv's scripts: `kinto`, `datasette`

KINTO_INI = """\
[server:main]
use = egg:waitress#main
host = 127.0.0.1
port = %(http_port)s

[app:main]
use = egg:kinto
kinto.storage_backend = kinto.core.storage.memory
kinto.cache_backend = kinto.core.cache.memory
kinto.permission_backend = kinto.core.permission.memory
kinto.userid_hmac_secret = sluice-tests
# Any user:password is an identity (basicauth:<hmac of both>); a bucket created by one is
# readable by that identity only, so a wrong password is answered 403.
multiauth.policies = basicauth
kinto.bucket_create_principals = system.Authenticated

[loggers]
keys = root, summary

[handlers]
keys = console, requests

[formatters]
keys = plain, json

[logger_root]
level = WARNING
handlers = console

# One JSON line per request served (path, querystring, code): what the tests count.
[logger_summary]
level = INFO
handlers = requests
qualname = request.summary
propagate = 0

[handler_console]
class = StreamHandler
args = (sys.stderr,)
formatter = plain

[handler_requests]
class = FileHandler
args = ({requests!r}, "a")
formatter = json

[formatter_plain]
format = %(asctime)s %(levelname)s %(name)s %(message)s

[formatter_json]
class = kinto.core.JsonLogFormatter
"""


def _up(http: httpx.Client, path: str) -> bool:
    try:
        return http.get(path).status_code == 200
    except httpx.TransportError:
        return False


class KintoServer(Served):
    """``kinto start`` on a free port with an ini in ``tmp``; ``http`` is a client of its
    ``/v1`` API, authenticated as ``user``:``password`` (who owns what it creates)."""

    BATCH = 25  # Kinto's batch_max_requests

    def __init__(self, tmp: Path, *, user: str = "bot", password: str = "kinto-pw") -> None:
        self.tmp = tmp
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.requests_log = tmp / "kinto-requests.jsonl"
        ini = tmp / "kinto.ini"
        ini.write_text(KINTO_INI.format(requests=str(self.requests_log)))
        self.child = Child("kinto", [str(BIN / "kinto"), "start", "--ini", str(ini),
                                     "--port", str(self.port)], log=tmp / "kinto.log")
        self.http = httpx.Client(base_url=self.url, auth=(user, password), timeout=10,
                                 headers={"User-Agent": HARNESS})

    def start(self) -> KintoServer:
        self.child.start()
        self.child.wait_until(lambda: _up(self.http, "/__heartbeat__"), timeout=60)
        return self


    @staticmethod
    def records_path(bucket: str, collection: str) -> str:
        return f"/buckets/{bucket}/collections/{collection}/records"

    def create_collection(self, bucket: str, collection: str) -> None:
        """The bucket and the collection, owned by this client's identity."""
        self.http.put(f"/buckets/{bucket}", json={}).raise_for_status()
        self.http.put(f"/buckets/{bucket}/collections/{collection}", json={}).raise_for_status()

    def _batch(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Kinto's /batch, 25 at a time; raises when any sub-request failed."""
        done: list[dict[str, Any]] = []
        for start in range(0, len(requests), self.BATCH):
            answer = self.http.post("/batch", json={"requests": requests[start:start + self.BATCH]})
            answer.raise_for_status()
            for one in answer.json()["responses"]:
                if one["status"] >= 400:
                    raise RuntimeError(f"kinto batch: {one}")
                done.append(one["body"])
        return done

    def put(self, bucket: str, collection: str,
            records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """Create or replace ``records`` (each with an ``id``; a ``last_modified`` in the past
        is kept as given, without one the server stamps now); their stored versions."""
        path = self.records_path(bucket, collection)
        return [b["data"] for b in self._batch([
            {"method": "PUT", "path": f"{path}/{r['id']}", "body": {"data": r}} for r in records])]

    def patch(self, bucket: str, collection: str,
              changes: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
        """Edit records (id -> fields); the server stamps each edit now."""
        path = self.records_path(bucket, collection)
        return [b["data"] for b in self._batch([
            {"method": "PATCH", "path": f"{path}/{rid}", "body": {"data": fields}}
            for rid, fields in changes.items()])]

    def delete(self, bucket: str, collection: str, ids: Iterable[str]) -> list[dict[str, Any]]:
        """Delete records; the server keeps a tombstone of each (returned)."""
        path = self.records_path(bucket, collection)
        return [b["data"] for b in self._batch([
            {"method": "DELETE", "path": f"{path}/{rid}"} for rid in ids])]

    def records(self, bucket: str, collection: str, *,
                since: int | None = None) -> dict[str, dict[str, Any]]:
        """What the server holds, by id, read through its own paging (``Next-Page``); with
        ``since``, what changed after it, tombstones included."""
        params: dict[str, Any] = {"_limit": 1000}
        if since is not None:
            params["_since"] = since
        url: str | None = self.records_path(bucket, collection)
        found: dict[str, dict[str, Any]] = {}
        while url:
            answer = self.http.get(url, params=params)
            answer.raise_for_status()
            found.update((r["id"], r) for r in answer.json()["data"])
            url, params = answer.headers.get("Next-Page"), {}  # the next URL holds the query
        return found

    def served(self, path: str, *, code: int | None = None) -> list[dict[str, Any]]:
        """The query strings of the GETs of ``path`` (under /v1) the server logged, oldest
        first, but for the harness's own; with ``code``, only those it answered with that
        status."""
        asked = []
        for line in self.requests_log.read_text().splitlines():
            fields = json.loads(line).get("Fields", {})
            if (fields.get("method") == "GET" and fields.get("path") == "/v1" + path
                    and fields.get("agent") != HARNESS and code in (None, fields.get("code"))):
                asked.append(fields.get("querystring") or {})
        return asked


class DatasetteServer(Served):
    """``datasette serve`` of a SQLite file in ``tmp`` (database ``data``, mutable: it reads
    the file live) on a free port."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db = tmp / "data.db"
        sqlite3.connect(self.db).close()
        self.child = Child("datasette", [str(BIN / "datasette"), "serve", str(self.db),
                                         "--host", "127.0.0.1", "--port", str(self.port)],
                           log=tmp / "datasette.log")
        self.http = httpx.Client(base_url=self.url, timeout=10)

    def start(self) -> DatasetteServer:
        self.child.start()
        self.child.wait_until(lambda: _up(self.http, "/-/versions.json"), timeout=60)
        return self


    def execute(self, sql: str, rows: Iterable[tuple[Any, ...]] = ((),)) -> None:
        """Run ``sql`` once per row, in one transaction of the served file."""
        with sqlite3.connect(self.db) as conn:
            conn.executemany(sql, rows)
        conn.close()

    def rows(self, table: str) -> dict[str, dict[str, Any]]:
        """The table's rows as the server answers them, by id (as text), read through its own
        paging (``next_url``)."""
        url: str | None = f"/data/{table}.json?_shape=objects&_size=max"
        found: dict[str, dict[str, Any]] = {}
        while url:
            answer = self.http.get(url)
            answer.raise_for_status()
            body = answer.json()
            found.update((str(r["id"]), r) for r in body["rows"])
            url = body.get("next_url")
        return found
