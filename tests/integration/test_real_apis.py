"""Open-source API servers nobody on this project wrote, synced by configuration alone.

Each server runs as a real process (tests/support/apiservers.py); Sluice reads it through the
REST integration with nothing but a sluice.toml, on real workers, into SQLite. After every run
the target is compared with what the server itself answers, then the data is changed on the
server (edits, additions, deletions) and compared again.

- Kinto pages with a ``Next-Page`` header, checks HTTP basic auth, and its ``_since`` reads
  (epoch milliseconds) return deletion tombstones: the incremental run is a request or two, and
  the tombstones delete rows.
- Datasette pages with ``next_url`` in the body, and by keyset (``id__gt``): two kinds over one
  table, each compared with the table.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.apiservers import DatasetteServer, KintoServer
from tests.support.configs import QUICK_RETRIES, rest_source, sqlite_target, toml
from tests.support.databases import RedisDatabases
from tests.support.workers import Client, Workers, redis_values

pytestmark = pytest.mark.integration

PAGE = 40  # several pages of the few hundred items each server holds
PASSWORD = "kinto-pw-7d1e0b55-never-log-me"
BUCKET, COLLECTION = "shop", "products"
RECORDS = KintoServer.records_path(BUCKET, COLLECTION)


def kinto_source(url: str, source: str, password: str, *lines: str) -> str:
    """Source ``source``, which logs in to Kinto as ``bot`` with ``password``, and its kind
    ``products``: the records of the collection, paged by Next-Page, with ``lines`` added."""
    return toml(
        rest_source(url, 'auth = { type = "basic", username = "bot", password = '
                    f'"{password}" }}', QUICK_RETRIES, source=source),
        "\n".join([f"[sources.{source}.kinds.products]", f'path = "{RECORDS}"', 'items = "data"',
                   'paginator = { type = "next_url", header = "Next-Page", limit_param = "_limit",'
                   f" limit = {PAGE} }}", *lines]))


def kinto_config(db: Path, url: str) -> str:
    return toml(
        sqlite_target(db),
        kinto_source(url, "kinto", "${KINTO_PASSWORD}", "deleted = '.deleted == true'",
                       "[sources.kinto.kinds.products.incremental]",
                       'cursor_path = "last_modified"', 'param = "_since"',
                       'cursor_type = "epoch_ms"', 'lookback = "2m"'),
        # The same collection with another password: another identity to Kinto, which owns
        # nothing.
        kinto_source(url, "stranger", "not-the-password"))


DATASETTE_KINDS = """
[sources.datasette.kinds.books]
path = "/books.json"
params = {{ _shape = "objects" }}
items = "rows"
paginator = {{ type = "next_url", path = "next_url", limit_param = "_size", limit = {page} }}

[sources.datasette.kinds.books_by_id]
path = "/books.json"
params = {{ _shape = "objects", _sort = "id" }}
items = "rows"
[sources.datasette.kinds.books_by_id.paginator]
type = "keyset"
param = "id__gt"
field = "id"
limit_param = "_size"
limit = {page}
"""


def target_rows(db: Path, source: str, kind: str) -> dict[str, dict[str, Any]]:
    """What Sluice wrote for ``source``/``kind``, by identifier."""
    with sqlite3.connect(db) as conn:
        found = {i: json.loads(d) for i, d in conn.execute(
            "SELECT identifier, data FROM entities WHERE source = ? AND kind = ?",
            (source, kind))}
    conn.close()
    return found


def watermarks(db: Path, source: str, kind: str) -> list[Any]:
    """The watermarks kept in the target's state table (one per partition)."""
    with sqlite3.connect(db) as conn:
        found = [json.loads(v) for (v,) in conn.execute(
            "SELECT value FROM sluice_watermarks WHERE source = ? AND kind = ?", (source, kind))]
    conn.close()
    return found


def fields(rows: dict[str, dict[str, Any]], *names: str) -> dict[str, tuple[Any, ...]]:
    """id -> the values of ``names``: what a comparison with the server looks at."""
    return {i: tuple(r.get(n) for n in names) for i, r in rows.items()}


@dataclass
class Synced:
    """A server, the workers syncing it, and the target they write."""

    server: Any
    workers: Workers
    client: Client
    db: Path


@contextmanager
def synced(server: Any, tmp: Path, config: str, url: str, db: Path, *,
           env: dict[str, str] | None = None) -> Iterator[Synced]:
    """A worker node on the Redis database at ``url`` reading ``config`` (the text of a
    sluice.toml, written into ``tmp``) with ``env``, and a client of that database; both
    stopped at the end."""
    path = tmp / "sluice.toml"
    path.write_text(config)
    client = Client(url)
    workers = Workers(config=path, redis_url=url, log=tmp / "worker.log", env=env).start()
    try:
        yield Synced(server, workers, client, db)
    finally:
        workers.stop()
        client.close()


# --- Kinto: a next URL in a header, basic auth, tombstones, an epoch-ms watermark ----------

@pytest.fixture(scope="module")
def kinto(tmp_path_factory, redis_databases: RedisDatabases) -> Iterator[Synced]:
    tmp = tmp_path_factory.mktemp("kinto")
    db = tmp / "db.sqlite"
    with KintoServer(tmp, user="bot", password=PASSWORD) as server, \
            redis_databases.lease() as url:
        server.create_collection(BUCKET, COLLECTION)
        with synced(server, tmp, kinto_config(db, server.url), url, db,
                    env={"KINTO_PASSWORD": PASSWORD}) as k:
            yield k


def kinto_products(k: Synced) -> dict[str, tuple[Any, ...]]:
    return fields(k.server.records(BUCKET, COLLECTION), "title", "price", "last_modified")


def synced_products(k: Synced) -> dict[str, tuple[Any, ...]]:
    return fields(target_rows(k.db, "kinto", "products"), "title", "price", "last_modified")


def served_since(k: Synced, seen: int) -> list[dict[str, str]]:
    """The queries of the record listings Kinto served after the first ``seen``."""
    return k.server.served(RECORDS)[seen:]


def test_kinto_a_full_run_lands_exactly_the_servers_records(kinto: Synced):
    # A day ago, a minute apart: the watermark is well before the edits made later (stamped
    # now by the server), so what an incremental read returns depends on the lookback.
    day_ago = int(time.time() * 1000) - 86_400_000
    kinto.server.put(BUCKET, COLLECTION, [
        {"id": f"p{i:03}", "title": f"product {i}", "price": i * 10,
         "last_modified": day_ago + i * 60_000} for i in range(300)])

    run = kinto.client.resync("kinto", "products")

    assert run.state == "succeeded", run
    assert not run.incremental  # no watermark yet: everything
    assert synced_products(kinto) == kinto_products(kinto)
    assert len(synced_products(kinto)) == 300
    asked = served_since(kinto, 0)
    # The first request asks for a page of 40; every later one is Kinto's own Next-Page URL.
    assert asked[0] == {"_limit": str(PAGE)}
    assert all("_token" in q and "_since" not in q for q in asked[1:])
    assert len(asked) == run.pages == math.ceil(300 / PAGE)
    # The watermark is Kinto's own number: epoch milliseconds, as the server wrote them.
    assert watermarks(kinto.db, "kinto", "products") == [day_ago + 299 * 60_000]


def test_kinto_an_incremental_run_reads_the_changes_and_tombstones_delete(kinto: Synced):
    watermark = max(r[2] for r in kinto_products(kinto).values())
    assert watermarks(kinto.db, "kinto", "products") == [watermark]
    edited = [f"p{i:03}" for i in range(0, 100, 5)]  # 20
    gone = [f"p{i:03}" for i in range(1, 150, 10)]  # 15
    kinto.server.patch(BUCKET, COLLECTION, {i: {"title": f"edited {i}"} for i in edited})
    kinto.server.put(BUCKET, COLLECTION, [
        {"id": f"n{i:03}", "title": f"new {i}", "price": 1} for i in range(20)])
    kinto.server.delete(BUCKET, COLLECTION, gone)
    since = watermark - 120_000  # lookback "2m" in the watermark's unit: milliseconds
    changes = kinto.server.records(BUCKET, COLLECTION, since=since)  # as Kinto answers it
    seen = len(kinto.server.served(RECORDS))
    # The two records of the lookback window, the edits, the additions and the tombstones.
    assert len(changes) == 2 + 20 + 20 + 15

    run = kinto.client.resync("kinto", "products")

    assert run.state == "succeeded", run
    assert run.incremental
    asked = served_since(kinto, seen)
    assert {q["_since"] for q in asked} == {str(since)}
    assert len(asked) == run.pages == math.ceil(len(changes) / PAGE)  # 2 requests, not 9
    assert run.items_fetched == len(changes)
    assert run.items_deleted == len(gone)  # by the tombstones, ...
    assert run.deleted == 0  # ... while an incremental run deletes nothing as stale
    synced = synced_products(kinto)
    assert synced == kinto_products(kinto)  # edits in, additions in, deletions out
    assert not set(gone) & set(synced)
    assert not [r for r in target_rows(kinto.db, "kinto", "products").values()
                if r.get("deleted")]  # a tombstone is never data

    # The watermark is now the newest change read (a tombstone's time is a change too); a run
    # with nothing new reads its lookback window again, in a request or two.
    newest = max(r["last_modified"] for r in changes.values())
    assert watermarks(kinto.db, "kinto", "products") == [newest]
    window = kinto.server.records(BUCKET, COLLECTION, since=newest - 120_000)
    seen = len(kinto.server.served(RECORDS))
    again = kinto.client.resync("kinto", "products")
    assert (again.state, again.incremental) == ("succeeded", True), again
    asked = served_since(kinto, seen)
    assert {q["_since"] for q in asked} == {str(newest - 120_000)}
    assert len(asked) == again.pages == math.ceil(len(window) / PAGE)
    assert synced_products(kinto) == kinto_products(kinto)


def test_kinto_a_full_run_after_the_changes_deletes_nothing_wrongly(kinto: Synced):
    run = kinto.client.resync("kinto", "products", full=True)

    assert run.state == "succeeded", run
    assert not run.incremental
    assert run.deleted == 0 and not run.deletion_refused, run
    assert run.items_written == 300 - 15 + 20
    assert synced_products(kinto) == kinto_products(kinto)


def test_kinto_checks_the_password_and_sluice_never_shows_it(kinto: Synced):
    refused = len(kinto.server.served(RECORDS, code=403))

    run = kinto.client.resync("stranger", "products")

    # Another password is another identity to Kinto, which may not read the collection: the
    # run fails on the first answer (a 403 is not retried) and writes nothing.
    assert run.state == "failed", run
    assert "403" in run.reason + run.error, run
    assert len(kinto.server.served(RECORDS, code=403)) == refused + 1
    assert target_rows(kinto.db, "stranger", "products") == {}
    # The password the server accepted went out in every request of the earlier runs, and
    # nowhere else: not in the workers' log, not in Redis.
    assert PASSWORD not in kinto.workers.log.read_text(errors="replace")
    leaks = [key for key, value in redis_values(kinto.client.redis) if PASSWORD.encode() in value]
    assert leaks == []


# --- Datasette: a next URL in the body, keyset paging --------------------------------------

@pytest.fixture(scope="module")
def datasette(tmp_path_factory, redis_databases: RedisDatabases) -> Iterator[Synced]:
    tmp = tmp_path_factory.mktemp("datasette")
    db = tmp / "db.sqlite"
    with DatasetteServer(tmp) as server, redis_databases.lease() as url:
        server.execute("CREATE TABLE books (id INTEGER PRIMARY KEY, title TEXT, price REAL)")
        config = toml(sqlite_target(db), rest_source(f"{server.url}/data", QUICK_RETRIES,
                                                     source="datasette"),
                      DATASETTE_KINDS.format(page=PAGE))
        with synced(server, tmp, config, url, db) as d:
            yield d


def datasette_books(d: Synced) -> dict[str, tuple[Any, ...]]:
    return fields(d.server.rows("books"), "id", "title", "price")


def synced_books(d: Synced, kind: str) -> dict[str, tuple[Any, ...]]:
    return fields(target_rows(d.db, "datasette", kind), "id", "title", "price")


KINDS = ["books", "books_by_id"]


def sync_both(d: Synced) -> dict[str, Any]:
    """A full run of each kind, at the same time; their runs once ended."""
    started = {kind: d.client.start("datasette", kind, full=True) for kind in KINDS}
    return {kind: d.client.wait(run.run_id) for kind, run in started.items()}


def test_datasette_a_full_run_lands_exactly_the_servers_rows(datasette: Synced):
    datasette.server.execute("INSERT INTO books VALUES (?, ?, ?)",
                             [(i, f"book {i}", i + 0.5) for i in range(1, 301)])

    runs = sync_both(datasette)

    books = datasette_books(datasette)
    assert len(books) == 300
    for kind, run in runs.items():
        assert run.state == "succeeded", run
        assert synced_books(datasette, kind) == books, kind
    # 300 rows, 40 a page: 8 pages by the body's next_url (the last has none); by keyset the
    # eighth is short, so it is the last.
    assert runs["books"].pages == runs["books_by_id"].pages == math.ceil(300 / PAGE)


def test_datasette_after_changes_a_full_run_matches_the_server_again(datasette: Synced):
    server = datasette.server
    server.execute("UPDATE books SET title = 'edited ' || id, price = price * 2"
                   " WHERE id % 15 = 0")  # 20
    server.execute("INSERT INTO books VALUES (?, ?, ?)",
                   [(i, f"new {i}", 1.0) for i in range(301, 326)])  # 25
    gone = [(i,) for i in range(7, 300, 20)]  # 15
    server.execute("DELETE FROM books WHERE id = ?", gone)
    books = datasette_books(datasette)
    assert len(books) == 300 + 25 - 15

    runs = sync_both(datasette)

    for kind, run in runs.items():
        assert run.state == "succeeded", run
        assert run.deleted == len(gone), run  # missing from a clean full run: stale
        assert synced_books(datasette, kind) == books, kind

    # Nothing changed: a full run again deletes nothing and still matches.
    runs = sync_both(datasette)
    for kind, run in runs.items():
        assert (run.state, run.deleted) == ("succeeded", 0), run
        assert synced_books(datasette, kind) == books, kind
