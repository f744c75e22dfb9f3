"""What the workers keep of webhook batches (tasks/runs/webhooks.py), on fakeredis with Lua."""

from __future__ import annotations

from typing import Any

import fakeredis
from prometheus_client import generate_latest
from prometheus_client.registry import CollectorRegistry

from integrations.secrets import Redactor
from tasks.operator.exporter import SluiceCollector
from tasks.runs import keys
from tasks.runs.deadletter import DeadLetter
from tasks.runs.progress import Progress
from tasks.runs.webhooks import WebhookLog
from tasks.settings import Settings

SECRET = "tok-in-an-item-4d1a"


def test_a_batch_is_counted_once_whatever_its_redeliveries() -> None:
    r = fakeredis.FakeRedis()
    log = WebhookLog(r, redactor=Redactor({SECRET}))
    rejected = [{"seq": 0, "index": 2, "reason": "no identifier", "item": f"{{'t': '{SECRET}'}}"}]
    counts = {"written": 3, "deleted": 1, "stale": 0, "rejected": 1, "skipped": 0}
    assert log.record("gh", "issue", "b-1", counts=counts, rejected=rejected)
    assert not log.record("gh", "issue", "b-1", counts=counts, rejected=rejected)
    assert r.hget(keys.METRICS, "webhook_written|gh|issue") == b"3"
    assert r.hget(keys.METRICS, "webhook_deleted|gh|issue") == b"1"
    assert r.hget(keys.METRICS, "webhook_stale|gh|issue") is None  # zero: not written
    [kept] = log.rejected("gh")
    assert kept["batch"] == "b-1" and kept["reason"] == "no identifier"
    assert SECRET not in kept["item"]


def test_a_dead_letter_is_kept_until_the_batch_is_written() -> None:
    r = fakeredis.FakeRedis()
    log = WebhookLog(r, redactor=Redactor({SECRET}))
    log.dead_letter(DeadLetter(task="webhook", source="gh", kind="issue", items=[{"item": {}}],
                               attempts=6, at=1.0,
                               error=f"TargetUnavailable: dsn with {SECRET}"), batch="b-2")
    [(batch, letter)] = log.dead_letters("gh").items()
    assert batch == "b-2" and letter.attempts == 6 and SECRET not in letter.error
    assert letter.items == [{"item": {}}] and letter.source == "gh"
    log.record("gh", "issue", "b-2", counts={"written": 1}, rejected=[])  # retried: written
    assert log.dead_letters("gh") == {}
    registry = CollectorRegistry()
    registry.register(SluiceCollector(Progress(r, lock_seconds=60, ttl=3600)))
    text = generate_latest(registry).decode()
    assert 'sluice_webhook_batches_failed_total{kind="issue",source="gh"} 1.0' in text
    assert 'sluice_webhook_written_total{kind="issue",source="gh"} 1.0' in text


def test_run_seqs_only_grow_and_pass_every_run_before_them() -> None:
    r = fakeredis.FakeRedis()
    progress = Progress(r, lock_seconds=60, ttl=3600)
    log = WebhookLog(r)
    run = progress.create_run("src", "kind")
    first = log.run_seq()
    assert first > run.run_seq
    assert log.run_seq() > first
    assert progress.create_run("src", "other").run_seq > first


def test_versions_order_on_one_scale_only() -> None:
    from integrations.incremental import position
    from tasks.webhook import before

    ten, eleven = position("2026-11-21T10:00:00Z"), position("2026-11-21T11:00:00+00:00")
    assert ten is not None and ten[0] == "time" and before(ten, eleven)
    assert not before(eleven, ten) and before(ten, ten, tie=True) and not before(ten, ten)
    assert position("17") == position(17) and position(17)[0] == "number"  # type: ignore[index]
    # A number is no instant after every time (10**12 is not "later" than 2026).
    assert not before(ten, position(10**12)) and not before(position(10**12), ten)
    for unknown in (None, True, "not a time", [1], float("nan")):
        assert position(unknown) is None
        assert not before(position(unknown), ten) and not before(ten, position(unknown))


def test_tombstones_and_claims_outlive_githubs_three_days_of_redeliveries() -> None:
    assert Settings.model_fields["webhook_delivery_ttl"].default >= 72 * 3600
    r = fakeredis.FakeRedis()
    WebhookLog(r).bury("gh", "issue", {"444500041": "2021-10-11T16:40:56Z"})
    assert r.ttl(keys.webhook_gone("gh", "issue", "444500041")) > 72 * 3600


def sizes(r: fakeredis.FakeRedis) -> dict[bytes, tuple[int, int]]:
    """Every key -> (its TTL, its members / fields / items; a string: 1)."""
    length = {b"hash": r.hlen, b"set": r.scard, b"list": r.llen, b"zset": r.zcard,
              b"string": lambda _: 1}
    return {k: (r.ttl(k), length[r.type(k)](k)) for k in r.scan_iter()}


def test_counted_batch_ids_expire_and_nothing_kept_for_good_grows() -> None:
    """Each batch id counted is a key of its own expiring after the delivery TTL; the keys
    without a TTL (the metrics, the capped rejections) hold as much after 200 batches as after
    one. A set of every batch id, whose TTL each batch renewed, grew for good while events kept
    coming (ops/bench/soak.py)."""
    r = fakeredis.FakeRedis()
    log = WebhookLog(r, ttl=600)
    log.record("gh", "issue", "b-0", counts={"written": 1}, rejected=[])
    kept = {k: size for k, (ttl, size) in sizes(r).items() if ttl == -1}
    for n in range(1, 200):
        assert log.record("gh", "issue", f"b-{n}", counts={"written": 1}, rejected=[])
    assert not log.record("gh", "issue", "b-7", counts={"written": 1}, rejected=[])
    now = sizes(r)
    assert {k: size for k, (ttl, size) in now.items() if ttl == -1} == kept
    expiring = {k: v for k, v in now.items() if v[0] != -1}
    assert len(expiring) == 200 and all(0 < ttl <= 600 and size == 1
                                        for ttl, size in expiring.values())
    assert keys.webhook_batch("gh", "b-7").encode() in expiring


def test_a_batch_is_counted_in_one_step_and_only_the_newest_rejections_are_kept(
        monkeypatch) -> None:
    r = fakeredis.FakeRedis()
    log = WebhookLog(r)
    monkeypatch.setattr(keys, "REJECTED_KEEP", 2)
    for n in range(3):
        assert log.record("gh", "issue", f"b-{n}", counts={"rejected": 1, "written": 0},
                          rejected=[{"index": n, "reason": "no identifier"}])
    assert [x["batch"] for x in log.rejected("gh")] == ["b-1", "b-2"]
    assert r.hget(keys.METRICS, "webhook_rejected|gh|issue") == b"3"
    assert r.hget(keys.METRICS, "webhook_written|gh|issue") is None
    # one command (the script): the batch's mark, counts, rejections and dead letter at once
    sent: list[str] = []
    execute = r.execute_command

    def counted(*args: Any, **options: Any) -> Any:
        sent.append(str(args[0]))
        return execute(*args, **options)

    monkeypatch.setattr(r, "execute_command", counted)
    log.record("gh", "issue", "b-3", counts={"written": 2}, rejected=[{"index": 0}])
    assert sent == ["EVALSHA"]
