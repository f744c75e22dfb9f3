"""Webhook events end to end: signed HTTP requests to a running ``sluice serve``, real Celery
workers writing them into SQLite, a fake API on loopback for the follow-up fetches. What each
test asserts is the row in the target (or its absence) and the workers' counters."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from integrations.fakeapi import FakeAPI
from tasks.messages import QUEUES
from tasks.runs import keys
from tests.support.configs import github_webhook_source, rest_source, sqlite_target, toml
from tests.support.serve import Serve, signed
from tests.support.workers import SLUICE, Workers

pytestmark = pytest.mark.integration  # workers and a `sluice serve` process

SECRET = "hook-0c41d2-never-log-me"
TOKEN = "ghp-e2e-9b1f-never-log-me"
OCTOKIT = Path(__file__).parents[1] / "fixtures" / "octokit"  # real GitHub payloads
GITHUB_WINDOW = 72 * 3600  # GitHub redelivers a delivery up to 3 days after it sent it

TRACKER = """[sources.tracker.webhook]
fetch = { thin = "/one/thin/{item.id}" }
[sources.tracker.kinds.ticket]          # lands in entities; ordered by updated_at
path = "/cursor/ticket"
items = "data"
cursor_path = "updated_at"
[sources.tracker.kinds.note]            # no cursor_path: the later event wins
path = "/cursor/note"
items = "data"
[sources.tracker.kinds.thin]            # events carry the id alone: the worker fetches
path = "/cursor/thin"
items = "data"
[sources.tracker.kinds.sel]             # a typed table with a selector
path = "/cursor/sel"
items = "data"
[sources.tracker.kinds.sel.mapping]
selector = '.state != "archived"'
properties = { title = ".title", state = ".state" }
"""


def config_text(tmp: Path, api: str) -> str:
    return toml(sqlite_target(tmp / "db.sqlite"),
                github_webhook_source(token_env="HOOK_GH_TOKEN", secret_env="HOOK_SECRET",
                                      kinds=["issue", "issue_comment"]),
                rest_source(api, 'webhook_secret = "${HOOK_SECRET}"', source="tracker"), TRACKER)


class Hooks:
    def __init__(self, tmp: Path, serve: Serve, r: redis.Redis, api: FakeAPI) -> None:
        self.tmp, self.serve, self.r, self.api = tmp, serve, r, api

    def github(self, event: str, payload: Any, *, delivery: str | None = None,
               secret: str = SECRET) -> httpx.Response:
        body = json.dumps(payload).encode()
        return self.serve.http.post("/webhooks/gh", content=body, headers={
            "X-GitHub-Event": event, "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
            "X-Hub-Signature-256": signed(body, secret), "Content-Type": "application/json"})

    def github_form(self, event: str, raw: bytes, *, delivery: str) -> httpx.Response:
        """A real payload as a GitHub hook created through the API sends it: a form."""
        body = urllib.parse.urlencode({"payload": raw}).encode()
        return self.serve.http.post("/webhooks/gh/", content=body, headers={
            "X-GitHub-Event": event, "X-GitHub-Delivery": delivery,
            "X-Hub-Signature-256": signed(body, SECRET),
            "Content-Type": "application/x-www-form-urlencoded"})

    def rest(self, kind: str, action: str, item: Any, *, delivery: str | None = None
             ) -> httpx.Response:
        body = json.dumps({"kind": kind, "action": action, "item": item}).encode()
        return self.serve.http.post("/webhooks/tracker", content=body, headers={
            "X-Signature": signed(body, SECRET), "X-Delivery-Id": delivery or str(uuid.uuid4())})

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        db = self.tmp / "db.sqlite"
        if not db.exists():
            return []
        with sqlite3.connect(db) as conn:
            try:
                return conn.execute(sql, args).fetchall()
            except sqlite3.OperationalError as exc:  # the table is not there yet
                if "no such table" in str(exc):
                    return []
                raise

    def issue(self, number: int) -> dict[str, Any] | None:
        """The gh_issue row of issue ``number`` (its typed columns), or None."""
        rows = self.query('SELECT title, state, updated_at, "_raw" FROM gh_issue'
                          " WHERE identifier = ?", str(9000 + number))
        if not rows:
            return None
        title, state, updated, raw = rows[0]
        return {"title": title, "state": state, "updated_at": updated, "raw": json.loads(raw)}

    def entity(self, kind: str, identifier: str) -> dict[str, Any] | None:
        rows = self.query("SELECT data FROM entities WHERE source = 'tracker' AND kind = ?"
                          " AND identifier = ?", kind, identifier)
        return json.loads(rows[0][0]) if rows else None

    def counter(self, name: str) -> int:
        return int(float(self.r.hget(keys.METRICS, name) or 0))

    def settled(self) -> bool:
        """Every batch `sluice serve` published was handled: none waits in the queue, none is
        held by a worker (a batch is acked after its rows and counters are written; a 202
        means its batch is in the queue)."""
        return not any(self.r.llen(q) for q in QUEUES) and not self.r.hlen("unacked")

    def until(self, ready: Callable[[], Any], *, timeout: float = 30, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = ready()
            if got:
                return got
            time.sleep(0.05)
        raise AssertionError(f"not after {timeout:.0f} s: {what}; workers' log ends:\n"
                             + (self.tmp / "workers.log").read_text()[-3000:])


@pytest.fixture(scope="module")
def hooks(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Hooks]:
    tmp = tmp_path_factory.mktemp("webhooks")
    url = redis_url
    r = redis.Redis.from_url(url)
    with FakeAPI() as api:
        config = tmp / "sluice.toml"
        config.write_text(config_text(tmp, api.url))
        env = {"HOOK_SECRET": SECRET, "HOOK_GH_TOKEN": TOKEN}
        with Workers(config=config, redis_url=url, log=tmp / "workers.log", env=env), \
                Serve(config, url, log=tmp / "serve.log", env=env) as serve:
            yield Hooks(tmp, serve, r, api)
    r.close()


def issue(number: int, *, title: str | None = None, updated: str = "2026-11-20T10:00:00Z",
          **extra: Any) -> dict[str, Any]:
    return {"id": 9000 + number, "number": number, "title": title or f"Issue {number}",
            "state": "open", "repository_url": "https://api.github.com/repos/acme/repo1",
            "updated_at": updated, **extra}


def test_opened_lands_edited_updates_a_stale_edit_is_ignored_deleted_goes(hooks: Hooks
                                                                            ) -> None:
    assert hooks.github("issues", {"action": "opened", "issue": issue(1)}).status_code == 202
    row = hooks.until(lambda: hooks.issue(1), what="the opened issue's row")
    assert (row["title"], row["state"]) == ("Issue 1", "open")

    edited = issue(1, title="Renamed", updated="2026-11-20T11:00:00Z")
    assert hooks.github("issues", {"action": "edited", "issue": edited}).status_code == 202
    hooks.until(lambda: (hooks.issue(1) or {}).get("title") == "Renamed", what="the edit")

    # Delivered late: an edit from before the one the row holds.
    stale = issue(1, title="Older title", updated="2026-11-20T10:30:00Z")
    assert hooks.github("issues", {"action": "edited", "issue": stale}).status_code == 202
    hooks.until(lambda: hooks.counter("webhook_stale|gh|issue") == 1, what="the stale count")
    assert hooks.issue(1)["title"] == "Renamed"  # type: ignore[index]

    closed = issue(1, title="Renamed", updated="2026-11-20T12:00:00Z", state="closed")
    assert hooks.github("issues", {"action": "closed", "issue": closed}).status_code == 202
    hooks.until(lambda: (hooks.issue(1) or {}).get("state") == "closed", what="the close")

    gone = issue(1, updated="2026-11-20T13:00:00Z")
    assert hooks.github("issues", {"action": "deleted", "issue": gone}).status_code == 202
    hooks.until(lambda: hooks.issue(1) is None, what="the deleted issue's row gone")


def test_a_wrong_signature_is_401_and_nothing_is_written(hooks: Hooks) -> None:
    before = hooks.counter("webhook_deliveries|gh|-|refused_signature")
    answer = hooks.github("issues", {"action": "opened", "issue": issue(2)}, secret="guess")
    assert answer.status_code == 401
    assert hooks.counter("webhook_deliveries|gh|-|refused_signature") == before + 1
    # A signed event after it is written; the refused one never is.
    assert hooks.github("issues", {"action": "opened", "issue": issue(3)}).status_code == 202
    hooks.until(lambda: hooks.issue(3), what="the signed issue's row")
    assert hooks.issue(2) is None


def test_a_redelivery_is_applied_once(hooks: Hooks) -> None:
    # "note" has no cursor_path: were the first delivery applied again, its title would win.
    first = hooks.rest("note", "changed", {"id": "n1", "title": "A"}, delivery="note-1")
    assert first.status_code == 202
    hooks.until(lambda: hooks.entity("note", "n1"), what="the first note")
    assert hooks.rest("note", "changed", {"id": "n1", "title": "B"},
                      delivery="note-2").status_code == 202
    hooks.until(lambda: (hooks.entity("note", "n1") or {}).get("title") == "B",
                what="the second note")
    again = hooks.rest("note", "changed", {"id": "n1", "title": "A"}, delivery="note-1")
    assert (again.status_code, again.json()) == (200, {"duplicate": True})
    assert hooks.rest("note", "changed", {"id": "n2", "title": "marker"},
                      delivery="note-3").status_code == 202
    hooks.until(hooks.settled, what="every batch handled")
    assert hooks.entity("note", "n2") is not None  # the marker
    assert hooks.entity("note", "n1") == {"id": "n1", "title": "B"}
    assert hooks.counter("webhook_written|tracker|note") == 3


def test_events_of_one_item_in_one_batch_collapse_to_the_newest(hooks: Hooks) -> None:
    # Sent at once, they share a batch (or a few); the newest by updated_at stands whatever
    # order they arrive in.
    versions = [{"id": "t1", "title": f"v{h}", "updated_at": f"2026-11-20T{h:02d}:00:00Z"}
                for h in (3, 9, 1, 7, 5)]
    with ThreadPoolExecutor(5) as pool:
        codes = list(pool.map(lambda v: hooks.rest("ticket", "changed", v).status_code,
                              versions))
    assert codes == [202] * 5
    hooks.until(hooks.settled, what="every batch of them handled")
    assert (hooks.entity("ticket", "t1") or {}).get("title") == "v9"


def test_a_thin_event_is_fetched_and_one_the_api_no_longer_has_is_deleted(hooks: Hooks
                                                                          ) -> None:
    [full] = hooks.api.set_items("thin", 1)  # {"id": "thin-0", "title": ..., "n": 0}
    assert hooks.rest("thin", "changed", {"id": "thin-0"}).status_code == 202
    hooks.until(lambda: hooks.entity("thin", "thin-0") == full, what="the fetched item")
    assert [r[2] for r in hooks.api.requests("/one/thin")] == ["/one/thin/thin-0"]
    hooks.api.state.items["thin"] = []
    assert hooks.rest("thin", "changed", {"id": "thin-0"}).status_code == 202
    hooks.until(lambda: hooks.entity("thin", "thin-0") is None, what="the 404'd item gone")
    # An event the path cannot be made of is rejected with why, listed by `sluice failed`.
    assert hooks.rest("thin", "changed", {"no": "id"}).status_code == 202
    hooks.until(lambda: hooks.counter("webhook_rejected|tracker|thin") == 1,
                what="the rejection")
    listed = subprocess.run([*SLUICE, "failed", "list", "webhooks-tracker"], check=True,
                            capture_output=True, text=True, env=hooks.serve.child.env).stdout
    assert "webhooks-tracker rejected event 0 of batch" in listed
    assert "fetch:" in listed and "no" in listed


def test_a_delete_passes_the_selector_and_an_item_it_now_leaves_out_goes(hooks: Hooks
                                                                          ) -> None:
    def row(identifier: str) -> Any:
        return hooks.query('SELECT title, state FROM tracker_sel WHERE identifier = ?',
                           identifier)

    for ident in ("s1", "s2"):
        hooks.rest("sel", "changed", {"id": ident, "title": ident, "state": "open"})
    hooks.until(lambda: row("s1") and row("s2"), what="both rows")
    # The delete's payload is archived: the selector would skip it, and it still deletes.
    hooks.rest("sel", "deleted", {"id": "s1", "title": "s1", "state": "archived"})
    # An upsert the selector now leaves out removes the row, as a full resync would.
    hooks.rest("sel", "changed", {"id": "s2", "title": "s2", "state": "archived"})
    hooks.until(hooks.settled, what="every batch handled")
    assert not row("s1") and not row("s2")
    assert hooks.counter("webhook_deleted|tracker|sel") == 2


def test_a_burst_of_1000_signed_events_all_land_none_twice(hooks: Hooks) -> None:
    before_written = hooks.counter("webhook_written|gh|issue")
    counted = keys.webhook_batch("gh", "*")
    before_batches = len(list(hooks.r.scan_iter(counted)))
    numbers = range(1000, 2000)

    def send(n: int) -> int:
        return hooks.github("issues", {"action": "opened", "issue": issue(n)},
                            delivery=f"burst-{n}").status_code

    with ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(send, numbers))
    assert codes == [202] * 1000

    # A batch's rows are committed before its counters are written: wait for the last step.
    hooks.until(hooks.settled, timeout=120, what="every batch of the burst handled")
    (count,), = hooks.query("SELECT count(*) FROM gh_issue WHERE identifier BETWEEN"
                            " '10000' AND '10999'")
    assert count == 1000
    assert hooks.counter("webhook_written|gh|issue") - before_written == 1000
    batches = len(list(hooks.r.scan_iter(counted))) - before_batches
    assert 1 <= batches < 250, f"{batches} batches for 1,000 events: not coalesced"


def test_a_comment_lands_with_its_issue_and_the_secret_is_nowhere(hooks: Hooks) -> None:
    comment = {"id": 77, "body": "hi", "user": {"login": "ann"},
               "updated_at": "2026-11-20T10:00:00Z"}
    assert hooks.github("issue_comment", {"action": "created", "comment": comment,
                                          "issue": issue(4)}).status_code == 202
    hooks.until(lambda: hooks.query("SELECT body, issue_number, issue FROM gh_issue_comment"
                                    " WHERE identifier = '77'") == [("hi", 4, "9004")],
                what="the comment's row")
    logs = (hooks.tmp / "serve.log").read_text() + (hooks.tmp / "workers.log").read_text()
    stored = " ".join(f"{k!r}{hooks.r.dump(k)!r}" for k in hooks.r.keys("*"))
    for secret in (SECRET, TOKEN):
        assert secret not in logs and secret not in stored


def test_a_deleted_item_stays_deleted_when_an_older_version_arrives_late(hooks: Hooks
                                                                          ) -> None:
    def ticket(hour: int, title: str) -> dict[str, Any]:
        return {"id": "t-gone", "title": title, "updated_at": f"2026-11-21T{hour:02d}:00:00Z"}

    hooks.rest("ticket", "changed", ticket(10, "v10"))
    hooks.until(lambda: hooks.entity("ticket", "t-gone"), what="the ticket")
    hooks.rest("ticket", "deleted", ticket(11, "v10"))
    hooks.until(lambda: hooks.entity("ticket", "t-gone") is None, what="the delete")
    stale = hooks.counter("webhook_stale|tracker|ticket")
    hooks.rest("ticket", "changed", ticket(9, "v09, delivered late"))  # from before the delete
    hooks.until(lambda: hooks.counter("webhook_stale|tracker|ticket") == stale + 1,
                what="the late version counted stale")
    assert hooks.entity("ticket", "t-gone") is None
    hooks.rest("ticket", "changed", ticket(12, "v12"))  # newer than the delete: it stands
    hooks.until(lambda: (hooks.entity("ticket", "t-gone") or {}).get("title") == "v12",
                what="the newer version")


def test_a_version_without_a_cursor_value_is_rejected_and_leaves_the_row(hooks: Hooks
                                                                         ) -> None:
    hooks.rest("ticket", "changed", {"id": "t-dated", "title": "dated",
                                     "updated_at": "2026-11-21T10:00:00Z"})
    hooks.until(lambda: hooks.entity("ticket", "t-dated"), what="the ticket")
    before = hooks.counter("webhook_rejected|tracker|ticket")
    for undated in (None, "not a time", True, [1]):
        hooks.rest("ticket", "changed", {"id": "t-dated", "title": "undated",
                                         "updated_at": undated})
    hooks.rest("ticket", "changed", {"id": "t-dated", "title": "no field at all"})
    hooks.until(lambda: hooks.counter("webhook_rejected|tracker|ticket") == before + 5,
                what="five rejections")
    assert hooks.entity("ticket", "t-dated")["title"] == "dated"  # type: ignore[index]
    listed = subprocess.run([*SLUICE, "failed", "list", "webhooks-tracker"], check=True,
                            capture_output=True, text=True, env=hooks.serve.child.env).stdout
    assert "no time or number at 'updated_at'" in listed


def test_a_follow_up_the_api_refuses_is_dead_lettered_alone_and_retried(hooks: Hooks
                                                                         ) -> None:
    hooks.api.state.items["thin"] = [{"id": "thin-7", "title": "full"}]
    hooks.api.fail("/one/thin/thin-7", 403, times=1)
    assert hooks.rest("thin", "changed", {"id": "thin-7"}).status_code == 202
    hooks.until(lambda: hooks.counter("webhook_batches_failed|tracker|thin") >= 1,
                what="the dead letter")
    assert hooks.entity("thin", "thin-7") is None
    env = hooks.serve.child.env
    listed = subprocess.run([*SLUICE, "failed", "list", "webhooks-tracker"], check=True,
                            capture_output=True, text=True, env=env).stdout
    assert "1 events" in listed and "403" in listed
    # The token fixed (here: the API answers again), the event is sent again and lands.
    retried = subprocess.run([*SLUICE, "failed", "retry", "webhooks-tracker"], check=True,
                             capture_output=True, text=True, env=env).stdout
    assert "1 dead-lettered batch(es) enqueued again" in retried
    hooks.until(lambda: hooks.entity("thin", "thin-7") == {"id": "thin-7", "title": "full"},
                what="the retried event's row")
    hooks.until(lambda: not hooks.r.hlen(keys.webhook_dead("tracker")), what="no dead letter")


def test_real_form_deliveries_land_and_a_delete_outlives_githubs_redeliveries(hooks: Hooks
                                                                              ) -> None:
    """GitHub's own payloads (one issue, opened in 2019, deleted in 2021), sent as a form to
    the path with a trailing slash. The opened delivery redelivered after the delete, under
    its own id (claimed: a duplicate) or as a fresh one (a claim gone), stays out: the
    tombstone is there as long as GitHub may redeliver."""
    def row() -> list[tuple[Any, ...]]:
        return hooks.query("SELECT title, state FROM gh_issue WHERE identifier = '444500041'")

    opened = (OCTOKIT / "issues.opened.json").read_bytes()
    answer = hooks.github_form("issues", opened, delivery="gh-real-opened")
    assert answer.status_code == 202, answer.text
    assert hooks.until(row, what="the real opened issue's row") == [
        ("Spelling error in the README file", "open")]
    deleted = (OCTOKIT / "issues.deleted.json").read_bytes()
    assert hooks.github_form("issues", deleted, delivery="gh-real-deleted").status_code == 202
    hooks.until(lambda: not row(), what="the deleted issue's row gone")

    tombstone = keys.webhook_gone("gh", "issue", "444500041")
    assert hooks.r.ttl(tombstone) > GITHUB_WINDOW
    assert hooks.r.ttl(keys.webhook_delivery("gh", "gh-real-opened")) > GITHUB_WINDOW
    again = hooks.github_form("issues", opened, delivery="gh-real-opened")
    assert (again.status_code, again.json()) == (200, {"duplicate": True})
    stale = hooks.counter("webhook_stale|gh|issue")
    assert hooks.github_form("issues", opened, delivery="gh-real-opened-2").status_code == 202
    hooks.until(lambda: hooks.counter("webhook_stale|gh|issue") == stale + 1,
                what="the opened version from before the delete counted stale")
    assert row() == []
