"""PostgreSQL as the target with real workers, and the `sluice` command against real workers."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.integration.conftest import Pipeline
from tests.support.workers import SLUICE

pytestmark = pytest.mark.integration


@pytest.mark.postgres
def test_resync_into_postgres_upserts_and_deletes_stale(postgres_pipeline: Pipeline):
    p = postgres_pipeline
    items = p.api.set_items("cur", 230)
    run = p.client.resync("api", "cur")
    assert run.state == "succeeded", run
    assert p.rows("cur") == {i["id"]: i for i in items}
    items[0]["title"] = "renamed"
    del items[200:]
    run = p.client.resync("api", "cur")
    assert (run.state, run.deleted) == ("succeeded", 30)
    assert p.rows("cur") == {i["id"]: i for i in items}


def sluice(p: Pipeline, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SLUICE_REDIS_URL": p.workers.redis_url,
           "SLUICE_CONFIG": str(p.workers.config), "SLUICE_TEST_TOKEN": "x"}
    return subprocess.run([*SLUICE, *args], env=env,
                          capture_output=True, text=True, timeout=120)


def test_run_wait_json_prints_one_line_per_run_and_exits_0(sqlite_pipeline: Pipeline):
    p = sqlite_pipeline
    p.api.set_items("lnk", 90)
    p.api.set_items("off", 45)
    done = sluice(p, "run", "api", "--kind", "lnk", "--kind", "off", "--wait", "--json")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(r["kind"], r["state"], r["items_written"]) for r in lines] == [
        ("lnk", "succeeded", 90), ("off", "succeeded", 45)]
    status = json.loads(sluice(p, "status", lines[0]["run_id"], "--json").stdout)
    assert status["items_written"] == 90
    # what the stuck-run runbook reads
    assert {"updated_at", "in_flight", "producer_done"} <= set(status)


def test_run_wait_exits_1_when_a_run_fails_and_says_why(sqlite_pipeline: Pipeline):
    p = sqlite_pipeline
    p.api.set_items("noitems", 3)
    done = sluice(p, "run", "api", "--kind", "noitems", "--wait")
    assert done.returncode == 1
    assert "api/noitems run" in done.stdout and ": failed;" in done.stdout
    assert "reason: producer: MalformedPage" in done.stdout


def test_a_config_typo_names_the_file_and_the_key(sqlite_pipeline: Pipeline, tmp_path):
    broken = tmp_path / "sluice.toml"
    broken.write_text(p_text := sqlite_pipeline.workers.config.read_text().replace(
        'cursor_path = "next_cursor"', 'cursor_pth = "next_cursor"', 1))
    assert "cursor_pth" in p_text
    done = sluice(sqlite_pipeline, "--config", str(broken), "check")
    assert done.returncode == 2
    assert f"sluice: {broken}: invalid configuration" in done.stderr
    assert "sources.api.kinds.cur.paginator.cursor_pth: unknown key" in done.stderr
    assert "sources.api.kinds.cur.paginator.cursor_path: Field required" in done.stderr


def test_unknown_kind_is_refused_before_anything_is_enqueued(sqlite_pipeline: Pipeline):
    done = sluice(sqlite_pipeline, "run", "api", "--kind", "nope")
    assert done.returncode == 2 and "source 'api' has no kind 'nope'" in done.stderr


def test_sluice_metrics_serves_prometheus_text(sqlite_pipeline: Pipeline):
    import httpx

    from tasks.operator.redisserver import free_port

    p = sqlite_pipeline
    p.api.set_items("pgt", 120)
    run = p.client.resync("api", "pgt")
    port = free_port()
    env = {**os.environ, "SLUICE_REDIS_URL": p.workers.redis_url,
           "SLUICE_CONFIG": str(p.workers.config)}
    server = subprocess.Popen([*SLUICE, "metrics", "--port", str(port)],
                              env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout and "sluice metrics on" in server.stdout.readline()
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    finally:
        server.terminate()
        server.wait(10)
    written = [line for line in text.splitlines()
               if line.startswith('sluice_items_written_total{kind="pgt",source="api"}')]
    assert written and float(written[0].split()[-1]) >= run.items_written == 120
    assert 'sluice_runs_total{kind="pgt",source="api",state="succeeded"}' in text
    assert 'sluice_run_duration_seconds_count{kind="pgt",source="api"}' in text


@pytest.mark.postgres
def test_values_postgres_cannot_store_reject_their_item_and_the_rest_lands(
        postgres_pipeline: Pipeline):
    p = postgres_pipeline
    items = p.api.set_items("unstorable", 300)
    items[10]["title"] = "a\x00b"  # NUL: PostgreSQL text and jsonb refuse it
    items[60]["title"] = "x\ud800y"  # a lone surrogate: not UTF-8
    run = p.client.resync("api", "unstorable")
    assert run.state == "succeeded", run  # 2 of 300: within max_rejected (1%)
    assert (run.items_written, run.items_rejected, run.batches_failed) == (298, 2, 0)
    assert set(p.rows("unstorable")) == {i["id"] for i in items} - {"unstorable-10",
                                                                     "unstorable-60"}
    reasons = {(r["seq"], r["index"]): r["reason"]
               for r in p.client.progress.rejected(run.run_id)}
    assert set(reasons) == {(1, 10), (2, 10)}
    assert "NUL" in reasons[(1, 10)] and "lone surrogate" in reasons[(2, 10)]
    run = p.client.resync("api", "unstorable")  # the next run again: same outcome, no loop
    assert (run.state, run.items_rejected) == ("succeeded", 2)


@pytest.mark.postgres
def test_a_finalize_that_cannot_delete_fails_the_run_and_frees_the_kind(
        tmp_path, shared_api, redis_databases):
    """A role that may write but not DELETE: the run that would delete stale rows fails with
    the reason, instead of staying 'finalizing' with its lock held."""
    import psycopg

    from tasks.targets.pgschema import own_tables
    from tests.integration.conftest import running_pipeline
    from tests.unit.test_targets import postgres_dsn

    dsn, role, table = postgres_dsn(), f"sluice_nodelete_{os.getpid()}", f"nodel_{os.getpid()}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}, {table}_state")
        conn.execute(f"DROP ROLE IF EXISTS {role}")
        conn.execute(f"CREATE ROLE {role} LOGIN")
        own = own_tables(table)
        conn.execute(own[table])
        conn.execute(own[f"{table}_state"])
        conn.execute(f"GRANT SELECT, INSERT, UPDATE ON {table}, {table}_state TO {role}")
    role_dsn = psycopg.conninfo.make_conninfo(dsn, user=role)
    try:
        with running_pipeline(tmp_path, shared_api, redis_databases, pg=(dsn, table),
                              target=f'type = "postgres"\ndsn = "{role_dsn}"\n'
                                     f'table = "{table}"') as p:
            items = p.api.set_items("stale", 100)
            assert p.client.resync("api", "stale").state == "succeeded"  # nothing stale
            del items[90:]
            run = p.client.resync("api", "stale")
            assert run.state == "failed", run
            assert "finalize: TargetRejected: postgres: permission denied" in run.reason
            assert len(p.rows("stale")) == 100
            assert p.client.start("api", "stale").state == "running"  # the lock is free
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {table}, {table}_state")
            conn.execute(f"DROP ROLE IF EXISTS {role}")
