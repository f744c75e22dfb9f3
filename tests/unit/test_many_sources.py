"""300 sources: sluice.toml loads and validates them, a mistake in one names that one, beat
keeps every-N entries on their grid, and a worker process builds only what it runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from celery.schedules import crontab, schedule

from integrations.errors import ConfigError
from integrations.registry import load
from tasks.app import app
from tasks.config import load_config
from tasks.schedule import Entry, beat_schedule
from tasks.settings import Settings
from tasks.worker import runtime
from tests.support.sources import every_or_cron, many_sources

N = 300


def test_300_sources_load_with_their_schedules(tmp_path: Path):
    config = load_config(many_sources(tmp_path / "sluice.toml", "http://127.0.0.1:9", N))
    assert sorted(config.sources) == [f"src{i:03d}" for i in range(N)]
    entries = beat_schedule(config)
    assert len(entries) == N + 1  # and the stall watch
    assert entries["resync-src000"]["schedule"] == timedelta(seconds=10)
    assert isinstance(entries["resync-src001"]["schedule"], crontab)
    assert {e["args"] for e in entries.values() if "args" in e} == {
        (f"src{i:03d}",) for i in range(N)}


@pytest.mark.parametrize("schedule_of,extra,expected", [
    (every_or_cron, lambda i: 'evry = "30s"' if i == 256 else "",
     "sources.src256.evry: unknown key"),
    (lambda i: 'every = "30x"' if i == 256 else every_or_cron(i), lambda i: "",
     "sources.src256.every: '30x' is not an interval"),
    (lambda i: 'schedule = "*/5 * *"' if i == 256 else every_or_cron(i), lambda i: "",
     "sources.src256.schedule: '*/5 * *' is not a 5-field cron string"),
])
def test_a_mistake_in_source_257_names_its_key_and_the_file(tmp_path: Path, schedule_of, extra,
                                                             expected):
    path = many_sources(tmp_path / "sluice.toml", "http://127.0.0.1:9", N,
                        schedule=schedule_of, extra=extra)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: invalid configuration")
    assert expected in message
    assert message.count("sources.src") == 1  # the one source, none of the 299 others


def entry(every: float | None, last: datetime, now: datetime) -> Entry:
    when = (crontab(minute="*/5", nowfun=lambda: now) if every is None
            else schedule(timedelta(seconds=every), nowfun=lambda: now))
    return Entry(name="resync-s", task="sluice.resync_source", schedule=when, app=app,
                 last_run_at=last)


T = datetime(2026, 12, 7, 16, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize("now,due", [
    (T + timedelta(seconds=10.4), T + timedelta(seconds=10)),  # sent 0.4 s late: due at 10 s
    (T + timedelta(seconds=10), T + timedelta(seconds=10)),
    (T + timedelta(seconds=35), T + timedelta(seconds=30)),  # beat was away: the grid, once
])
def test_an_every_entry_is_due_on_its_grid_however_late_it_was_sent(now: datetime,
                                                                     due: datetime):
    assert entry(10, T, now).due_on_grid() == due


def test_a_cron_entry_and_an_early_send_keep_celerys_clock():
    assert entry(None, T, T + timedelta(minutes=5, seconds=1)).due_on_grid() is None
    assert entry(10, T, T + timedelta(seconds=3)).due_on_grid() is None  # the clock went back


def test_a_worker_process_builds_the_integrations_and_clients_of_the_sources_it_runs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    config = load_config(many_sources(tmp_path / "sluice.toml", "http://127.0.0.1:9", N))
    names = {id(settings): name for name, settings in config.sources.items()}
    built: list[str] = []

    def counting(settings):  # the seam: every integration the runtime constructs
        built.append(names[id(settings)])
        return load(settings)

    monkeypatch.setattr(runtime, "load", counting)
    rt = runtime.Runtime(Settings(redis_url="redis://127.0.0.1:1/0"), config)  # Redis unused
    try:
        rt.warm()
        assert built == []
        for name in ("src007", "src256", "src007"):  # what the tasks of three runs ask for
            rt.client(name)
        assert built == ["src007", "src256"]
    finally:
        rt.close()
