"""The pipelines the bulk benchmark measures beside Sluice, each run in a child process of its
own (so its CPU time and peak RSS are its own):

    python ops/bench/bulkpipes.py PIPELINE --url URL --items N [--dsn DSN --table T | --db F]

It prints one JSON line: ``start`` (time.time() when the loop started, after imports),
``seconds``, ``items`` written, ``first`` (seconds from start to the first page committed).

- ``ideal-pg``: one asyncio process, one reused httpx.AsyncClient, pages fetched 8 at a time
  once the first page gave the total, each page COPYed into a temporary table and upserted by
  one INSERT … ON CONFLICT (psycopg 3, two connections writing while the next pages come).
- ``seeds-pg``: the seeds' loop (Ocean's recipe): an async generator yields each page and the
  consumer writes it, with the same COPY upsert, before the next page is asked for.
- ``ideal-sqlite``: the ideal fetching, each page written by one executemany of an upsert in
  one transaction (WAL, synchronous=NORMAL, as Sluice's SQLite target), in a writer thread.
- ``loop-pg``, ``loop-sqlite``: a plain blocking loop over the cursor-paged API (fetch a
  page, write it, follow the cursor), the 20 lines a user would write.
- ``dlt``: dlt's ``rest_api`` source (offset paginator with the total, ``parallelized``,
  ``write_disposition = "merge"`` on ``id``) into PostgreSQL, dataset ``--table``.

The rows written are Sluice's ``entities`` rows (source, kind, identifier, data as JSON, run
stamps), so every pipeline writes the same bytes to the same kind of table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

CONCURRENCY = 8  # pages in flight at once: Sluice's default max_concurrency
WRITERS = 2  # PostgreSQL connections writing at once in the ideal pipeline (2 cores)
OFFSET_PATH, CURSOR_PATH = "/offset/issues", "/cursor/issues"
RUN_ID = "bench"

PG_TABLE = """
CREATE TABLE IF NOT EXISTS {t} (
    source text NOT NULL, kind text NOT NULL, identifier text NOT NULL, data jsonb NOT NULL,
    run_id text NOT NULL, run_seq bigint NOT NULL DEFAULT 0, first_seq bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (source, kind, identifier))
"""
PG_UPSERT = """
INSERT INTO {t} (source, kind, identifier, data, run_id, run_seq, first_seq)
SELECT 'bulk', 'issue', identifier, data, %s, %s, %s FROM page
ON CONFLICT (source, kind, identifier) DO UPDATE SET data = EXCLUDED.data,
    run_id = EXCLUDED.run_id, run_seq = EXCLUDED.run_seq, updated_at = now()
WHERE EXCLUDED.run_seq >= {t}.run_seq
"""
SQLITE_TABLE = """
CREATE TABLE IF NOT EXISTS entities (
    source TEXT NOT NULL, kind TEXT NOT NULL, identifier TEXT NOT NULL, data TEXT NOT NULL,
    run_id TEXT NOT NULL, run_seq INTEGER NOT NULL DEFAULT 0,
    first_seq INTEGER NOT NULL DEFAULT 0, updated_at REAL NOT NULL,
    PRIMARY KEY (source, kind, identifier))
"""
SQLITE_UPSERT = """
INSERT INTO entities (source, kind, identifier, data, run_id, run_seq, first_seq, updated_at)
VALUES ('bulk', 'issue', ?, ?, ?, 1, 1, ?)
ON CONFLICT (source, kind, identifier) DO UPDATE SET data = excluded.data,
    run_id = excluded.run_id, run_seq = excluded.run_seq, updated_at = excluded.updated_at
WHERE excluded.run_seq >= entities.run_seq
"""


class Clock:
    """When the loop started and when its first page was committed."""

    def __init__(self) -> None:
        self.start = time.time()
        self.cpu = cpu()
        self.first: float | None = None
        self.items = 0

    def wrote(self, n: int) -> None:
        if self.first is None:
            self.first = time.time() - self.start
        self.items += n

    def result(self) -> dict[str, Any]:
        return {"start": self.start, "seconds": time.time() - self.start, "items": self.items,
                "first": self.first, "cpu": cpu() - self.cpu,
                "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def cpu() -> float:
    """CPU seconds of this process and of the children it waited for (dlt's workers)."""
    own, kids = (resource.getrusage(who) for who in (resource.RUSAGE_SELF,
                                                      resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


# --- PostgreSQL: COPY into a temporary table, one upsert per page ----------------------------

async def pg_connect(dsn: str, table: str) -> Any:
    import psycopg

    conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    await conn.execute(PG_TABLE.format(t=table))
    await conn.execute("CREATE TEMP TABLE page (identifier text, data jsonb) "
                       "ON COMMIT DELETE ROWS")
    return conn


async def pg_write(conn: Any, table: str, items: list[dict[str, Any]]) -> None:
    async with conn.transaction(), conn.cursor() as cur:
        async with cur.copy("COPY page (identifier, data) FROM STDIN") as copy:
            for item in items:
                await copy.write_row((str(item["id"]), json.dumps(item)))
        await cur.execute(PG_UPSERT.format(t=table), (RUN_ID, 1, 1))


async def offset_pages(client: httpx.AsyncClient, *, limit: int = 500
                       ) -> AsyncIterator[list[dict[str, Any]]]:
    """Every page's items, in the order they arrive: ``CONCURRENCY`` fetchers take the next
    offset once the first page gave the total, and wait while ``CONCURRENCY`` pages wait for
    the consumer (memory stays bounded however slow the writes)."""
    async def get(offset: int) -> dict[str, Any]:
        response = await client.get(OFFSET_PATH, params={"offset": offset, "limit": limit})
        response.raise_for_status()
        body: dict[str, Any] = json.loads(response.content)
        return body

    first = await get(0)
    yield first["items"]
    offsets = iter(range(limit, first["total"], limit))
    ready: asyncio.Queue[list[dict[str, Any]] | None] = asyncio.Queue(maxsize=CONCURRENCY)

    async def fetcher() -> None:
        for offset in offsets:  # shared: each offset goes to one fetcher
            await ready.put((await get(offset))["items"])
        await ready.put(None)

    fetchers = [asyncio.ensure_future(fetcher()) for _ in range(CONCURRENCY)]
    running = len(fetchers)
    while running:
        items = await ready.get()
        if items is None:
            running -= 1
        else:
            yield items
    await asyncio.gather(*fetchers)  # raises what a fetcher raised


async def ideal_pg(a: argparse.Namespace, clock: Clock) -> None:
    queue: asyncio.Queue[list[dict[str, Any]] | None] = asyncio.Queue(maxsize=2 * CONCURRENCY)
    conns = [await pg_connect(a.dsn, a.table) for _ in range(WRITERS)]

    async def writer(conn: Any) -> None:
        while (items := await queue.get()) is not None:
            await pg_write(conn, a.table, items)
            clock.wrote(len(items))

    writers = [asyncio.ensure_future(writer(c)) for c in conns]
    async with httpx.AsyncClient(base_url=a.url, timeout=60) as client:
        async for items in offset_pages(client):
            await queue.put(items)
    for _ in writers:
        await queue.put(None)
    await asyncio.gather(*writers)
    for conn in conns:
        await conn.close()


async def seeds_pg(a: argparse.Namespace, clock: Clock) -> None:
    """Ocean's recipe: one reused AsyncClient, an async generator yielding each page, and the
    consumer writing each page before it asks for the next."""
    async def pages(client: httpx.AsyncClient) -> AsyncIterator[list[dict[str, Any]]]:
        offset, total = 0, None
        while total is None or offset < total:
            response = await client.get(OFFSET_PATH, params={"offset": offset, "limit": 500})
            body = json.loads(response.content)
            total = body["total"]
            if not body["items"]:
                return
            yield body["items"]
            offset += len(body["items"])

    conn = await pg_connect(a.dsn, a.table)
    async with httpx.AsyncClient(base_url=a.url, timeout=60) as client:
        async for items in pages(client):
            await pg_write(conn, a.table, items)
            clock.wrote(len(items))
    await conn.close()


# --- SQLite -----------------------------------------------------------------------------------

def sqlite_open(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(SQLITE_TABLE)
    conn.commit()
    return conn


def sqlite_write(conn: sqlite3.Connection, items: list[dict[str, Any]]) -> None:
    now = time.time()
    with conn:
        conn.executemany(SQLITE_UPSERT, [(str(i["id"]), json.dumps(i), RUN_ID, now)
                                         for i in items])


async def ideal_sqlite(a: argparse.Namespace, clock: Clock) -> None:
    conn = sqlite_open(a.db)
    lock = threading.Lock()  # one writer at a time, as SQLite allows

    def write(items: list[dict[str, Any]]) -> None:
        with lock:
            sqlite_write(conn, items)
            clock.wrote(len(items))

    writes: list[asyncio.Future[None]] = []
    async with httpx.AsyncClient(base_url=a.url, timeout=60) as client:
        async for items in offset_pages(client):
            writes = [w for w in writes if not w.done()]
            if len(writes) >= CONCURRENCY:  # bounded: pages wait in memory, not without end
                await asyncio.wait(writes, return_when=asyncio.FIRST_COMPLETED)
            writes.append(asyncio.ensure_future(asyncio.to_thread(write, items)))
    await asyncio.gather(*writes)
    conn.close()


# --- plain loops over the cursor-paged API -----------------------------------------------------

def cursor_loop(a: argparse.Namespace, clock: Clock, write: Callable[[list[Any]], None]) -> None:
    with httpx.Client(base_url=a.url, timeout=60) as client:
        cursor: str | None = ""
        while cursor is not None:
            body = client.get(CURSOR_PATH, params={"cursor": cursor, "limit": 1000}).json()
            write(body["data"])
            clock.wrote(len(body["data"]))
            cursor = body["next_cursor"]


def loop_pg(a: argparse.Namespace, clock: Clock) -> None:
    import psycopg

    with psycopg.connect(a.dsn, autocommit=True) as conn:
        conn.execute(PG_TABLE.format(t=a.table))
        conn.execute("CREATE TEMP TABLE page (identifier text, data jsonb) "
                     "ON COMMIT DELETE ROWS")

        def write(items: list[dict[str, Any]]) -> None:
            with conn.transaction(), conn.cursor() as cur:
                with cur.copy("COPY page (identifier, data) FROM STDIN") as copy:
                    for item in items:
                        copy.write_row((str(item["id"]), json.dumps(item)))
                cur.execute(PG_UPSERT.format(t=a.table), (RUN_ID, 1, 1))

        cursor_loop(a, clock, write)


def loop_sqlite(a: argparse.Namespace, clock: Clock) -> None:
    conn = sqlite_open(a.db)
    cursor_loop(a, clock, lambda items: sqlite_write(conn, items))
    conn.close()


# --- dlt ---------------------------------------------------------------------------------------

def run_dlt(a: argparse.Namespace, clock: Clock) -> None:
    import dlt
    from dlt.sources.rest_api import rest_api_source

    source = rest_api_source({
        "client": {"base_url": a.url,
                   "paginator": {"type": "offset", "limit": 500, "offset_param": "offset",
                                 "limit_param": "limit", "total_path": "total"}},
        "resource_defaults": {"primary_key": "id", "write_disposition": "merge"},
        "resources": [{"name": "issues", "parallelized": True,
                       "endpoint": {"path": OFFSET_PATH.lstrip("/"), "data_selector": "items"}}],
    })
    # dlt insists on a password; a server that trusts loopback (this one) ignores it.
    dsn = a.dsn if "@" not in a.dsn or ":" in a.dsn.split("://", 1)[1].split("@")[0] else \
        a.dsn.replace("@", ":unused@", 1)
    pipeline = dlt.pipeline(pipeline_name=a.table, destination=dlt.destinations.postgres(dsn),
                            dataset_name=a.table, pipelines_dir=a.db)
    info = pipeline.run(source)
    info.raise_on_failed_jobs()
    clock.wrote(pipeline.last_trace.last_normalize_info.row_counts.get("issues", 0))


PIPELINES: dict[str, Callable[[argparse.Namespace, Clock], Any]] = {
    "ideal-pg": ideal_pg, "seeds-pg": seeds_pg, "ideal-sqlite": ideal_sqlite,
    "loop-pg": loop_pg, "loop-sqlite": loop_sqlite, "dlt": run_dlt}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pipeline", choices=PIPELINES)
    p.add_argument("--url", required=True)
    p.add_argument("--dsn")
    p.add_argument("--table", default="bench_bulk_ideal")
    p.add_argument("--db", help="the SQLite file (dlt: its pipelines directory)")
    a = p.parse_args()
    if a.pipeline == "dlt":
        import dlt  # noqa: F401  # imported before the clock starts, as every other library is
    clock = Clock()
    got = PIPELINES[a.pipeline](a, clock)
    if asyncio.iscoroutine(got):
        asyncio.run(got)
    print(json.dumps(clock.result()), flush=True)


if __name__ == "__main__":
    main()
