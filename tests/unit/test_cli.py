"""The `sluice` command line through click's CliRunner: parsing, exit codes, --json output.
Nothing here needs a worker; the run records are on fakeredis."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from click.testing import CliRunner

from tasks.operator import cli, watch
from tasks.operator.cli import main, sluice
from tasks.runs.progress import Progress, Run, RunState
from tests.unit.test_config import ISSUE_EXAMPLE, write


@pytest.fixture
def progress(monkeypatch) -> Progress:
    records = Progress(fakeredis.FakeRedis(), lock_seconds=60, ttl=3600)
    monkeypatch.setattr(cli, "_progress", lambda: records)
    return records


@pytest.fixture
def config(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("TRACKER_TOKEN", "t")
    monkeypatch.delenv("SLUICE_CONFIG", raising=False)
    return write(tmp_path, ISSUE_EXAMPLE)


def test_help_lists_every_command():
    result = CliRunner().invoke(sluice, ["--help"])
    assert result.exit_code == 0
    for command in ("check", "run", "status", "failed", "entities", "schema", "metrics",
                    "standalone"):
        assert f"  {command} " in result.output
    failed = CliRunner().invoke(sluice, ["failed", "--help"])
    assert failed.exit_code == 0 and "  list " in failed.output and "  retry " in failed.output


def test_check_a_good_config_before_or_after_the_command(config: Path):
    for args in (["check", "--config", str(config)], ["--config", str(config), "check"]):
        result = CliRunner().invoke(sluice, args)
        assert result.exit_code == 0, result.output
        assert result.output.splitlines() == [
            f"{config}: ok", "target: http", "source tracker (rest): kinds issue"]


def test_the_config_after_the_command_wins(config: Path, tmp_path):
    missing = tmp_path / "missing.toml"
    args = ["--config", str(missing), "check", "--config", str(config)]
    result = CliRunner().invoke(sluice, args)
    assert result.exit_code == 0 and f"{config}: ok" in result.output


def test_check_a_broken_config_exits_2_naming_the_file_and_the_key(config: Path):
    config.write_text(ISSUE_EXAMPLE.replace("cursor_path =", "cursor_pth =", 1))
    result = CliRunner().invoke(sluice, ["check", "--config", str(config)])
    assert result.exit_code == 2
    assert f"sluice: {config}: invalid configuration" in result.output
    assert "sources.tracker.kinds.issue.paginator.cursor_pth: unknown key" in result.output


def test_run_refuses_an_unknown_kind_before_reaching_redis(config: Path, monkeypatch):
    monkeypatch.setattr(cli, "_progress", lambda: pytest.fail("Redis asked"))
    result = CliRunner().invoke(sluice, ["run", "tracker", "--kind", "nope", "--kind", "issue",
                                         "--config", str(config)])
    assert result.exit_code == 2
    assert "source 'tracker' has no kind 'nope' (kinds: issue)" in result.output


def test_usage_errors_exit_2():
    assert main(["failed"]) == 2  # list or retry
    assert main(["failed", "retry"]) == 2  # needs a RUN_ID
    assert main(["run"]) == 2  # needs a SOURCE
    assert main(["status", "--limit", "many"]) == 2
    assert main(["nosuchcommand"]) == 2
    assert main(["--help"]) == 0


def test_status_json_is_one_run_as_json_per_line_and_nothing_else(progress: Progress):
    runs = [progress.create_run("api", kind) for kind in ("a", "b")]
    result = CliRunner().invoke(sluice, ["status", "--json"])
    assert result.exit_code == 0
    by_id = {r.run_id: json.loads(json.dumps(r.as_json())) for r in runs}
    lines = [json.loads(line) for line in result.output.splitlines()]
    assert {line["run_id"]: line for line in lines} == by_id
    one = CliRunner().invoke(sluice, ["status", runs[0].run_id, "--json"])
    assert json.loads(one.output) == by_id[runs[0].run_id]
    assert CliRunner().invoke(sluice, ["status", "--json", "--limit", "1"]).output.count("\n") == 1


def test_status_of_an_unknown_run_exits_1(progress: Progress):
    result = CliRunner().invoke(sluice, ["status", "nosuchrun"])
    assert result.exit_code == 1 and "no run nosuchrun" in result.output


def test_status_piped_prints_the_summary_lines(progress: Progress):
    run = progress.create_run("api", "a")
    result = CliRunner().invoke(sluice, ["status"])
    assert result.exit_code == 0
    assert result.output.startswith(f"api/a run {run.run_id}: running; 0 written, 0 rejected")


def test_entities_of_an_empty_sqlite_file(tmp_path):
    db = str(tmp_path / "sluice.db")
    assert CliRunner().invoke(sluice, ["entities", "--db", db]).exit_code == 0
    result = CliRunner().invoke(sluice, ["entities", "--db", db, "nosource", "--limit", "1"])
    assert result.exit_code == 2
    assert "holds no entities of nosource (it holds: nothing)" in result.output


def test_wait_off_a_terminal_prints_plain_progress_lines(progress: Progress, capsys,
                                                         monkeypatch):
    run = progress.create_run("api", "a")
    ended = Run(run_id=run.run_id, source="api", kind="a", state=RunState.SUCCEEDED,
                producer_done=True, batches_enqueued=4, batches_done=4, items_written=200)
    monkeypatch.setattr(progress, "get", lambda run_id: ended)
    runs = watch.wait(progress, [run.run_id], show=True, stall_seconds=60, workers=lambda: ["w"])
    assert runs == [ended]
    err = capsys.readouterr().err
    assert err == ("api/a            [########################] 4/4 batches  200 written  "
                   "0 rejected  succeeded\n")


ENTITIES_CONFIG = """
[target]
{target}

[sources.api]
integration = "rest"
base_url = "http://127.0.0.1:9"

[sources.api.kinds.user]
path = "/users"

[sources.api.kinds.issue]
path = "/issues"
[sources.api.kinds.issue.mapping]
properties = {{ title = ".title", n = {{ jq = ".n", type = "integer" }} }}
table = "{table}"
"""


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_entities_counts_every_typed_table_and_reads_a_mapped_kind_from_its_own(
        kind, tmp_path, monkeypatch):
    from tasks.targets.base import Table
    from tests.unit.test_targets import postgres_dsn

    monkeypatch.delenv("SLUICE_CONFIG", raising=False)
    if kind == "sqlite":
        from tasks.targets.sqlite import SqliteTarget

        db = tmp_path / "t.db"
        target: Any = SqliteTarget(db)
        where, issues, orphan = f'path = "{db}"', "api_issues", "old_things"
    else:
        import uuid

        from tasks.targets.postgres import PostgresTarget

        own = f"clitest_{uuid.uuid4().hex[:8]}"
        target = PostgresTarget(postgres_dsn(), table=own)
        where = f'type = "postgres"\ndsn = "{postgres_dsn()}"\ntable = "{own}"'
        issues, orphan = f"{own}_t_issues", f"{own}_t_old"
    config = tmp_path / "sluice.toml"
    config.write_text(ENTITIES_CONFIG.format(target=where, table=issues))
    try:
        target.upsert([{"source": "api", "kind": "user", "identifier": f"u-{n}",
                        "data": {"id": f"u-{n}"}} for n in range(2)], run_id="r", run_seq=1)
        target.upsert_rows(Table(issues, {"title": "text", "n": "integer"}), [
            {"identifier": f"i-{n}", "values": {"title": f"t{n}", "n": n}, "raw": {"id": n}}
            for n in range(3)], run_id="r", run_seq=1)
        # The table of a mapping since removed: listed, not claimed by a kind.
        target.upsert_rows(Table(orphan, {}), [{"identifier": "x", "values": {}, "raw": {}}],
                           run_id="r", run_seq=1)
        listed = CliRunner().invoke(sluice, ["entities", "--config", str(config)])
        assert listed.exit_code == 0, listed.output
        lines = [line for line in listed.output.splitlines()
                 if kind == "sqlite" or "api/" in line or orphan in line]
        assert lines == ["api/user: 2", f"api/issue: 3 in table {issues}", f"table {orphan}: 1"]

        read = CliRunner().invoke(sluice, ["entities", "--config", str(config), "api", "issue",
                                           "--limit", "2"])
        assert read.exit_code == 0, read.output
        rows = [json.loads(line) for line in read.output.splitlines()]
        assert [(r["kind"], r["table"], r["row"]["identifier"], r["row"]["title"], r["row"]["n"],
                 r["row"]["_raw"]) for r in rows] == [
            ("issue", issues, "i-0", "t0", 0, {"id": 0}), ("issue", issues, "i-1", "t1", 1,
                                                             {"id": 1})]
        both = CliRunner().invoke(sluice, ["entities", "--config", str(config), "api"])
        kinds = [json.loads(line)["kind"] for line in both.output.splitlines()]
        assert kinds == ["user", "user", "issue", "issue", "issue"]
        if kind == "sqlite":  # without a config: the table {SOURCE}_{KIND}
            guessed = CliRunner().invoke(sluice, ["entities", "--db", str(db), "api", "issues"])
            assert guessed.exit_code == 0, guessed.output
            assert len(guessed.output.splitlines()) == 3
    finally:
        if kind == "postgres":
            from tests.unit.test_typed_tables import drop_tables

            drop_tables(target, own)
        else:
            target.close()


def test_failed_list_says_no_failures_for_a_clean_run(config: Path, progress: Progress):
    run = progress.create_run("tracker", "issue")
    progress.finish(run, RunState.SUCCEEDED)
    for args in (["failed", "list", run.run_id], ["failed", "list"]):
        result = CliRunner().invoke(sluice, [*args, "--config", str(config)])
        assert result.exit_code == 0, result.output
        where = run.run_id if len(args) == 3 else "the last 100 runs"
        assert result.output == (f"no failures in {where}: no dead-lettered batch, "
                                 "no rejected item\n")


def test_a_bar_fills_against_the_total_the_api_announced_or_stays_open_ended():
    running = {"run_id": "r", "source": "api", "kind": "a", "state": RunState.RUNNING,
               "batches_enqueued": 53, "batches_done": 52}
    announced = Run(**running, items_expected=1000, items_written=240, items_rejected=10)
    [row] = watch.rows(announced)
    assert watch.bar(row).startswith("api/a            [######..................] 52/53+ batches")
    # No total from the API: batches enqueued so far are no measure (52 of 53 looks full).
    [row] = watch.rows(Run(**running, items_written=2600))
    assert watch.bar(row).startswith("api/a            [~~~~~~~~~~~~~~~~~~~~~~~~] 52/53+ batches")
    [row] = watch.rows(Run(**{**running, "state": RunState.SUCCEEDED, "batches_done": 53,
                            "producer_done": True}))
    assert watch.bar(row).startswith("api/a            [########################] 53/53 batches")


def test_a_broker_that_refuses_is_named_and_the_run_it_was_for_frees_its_kind(
        config: Path, progress: Progress):
    # The unit tests' broker is 127.0.0.1:9, where nothing listens (tests/conftest.py).
    result = CliRunner().invoke(sluice, ["run", "tracker", "--config", str(config)])
    assert result.exit_code == 3, result.output
    assert "sluice: cannot reach the broker at redis://127.0.0.1:" in result.output
    [run] = progress.recent(1)
    assert run.state == RunState.FAILED
    assert run.reason.startswith("its producer task could not be sent to the broker at "
                                 "redis://127.0.0.1:9/0: ")
    assert progress.create_run("tracker", "issue").state == RunState.RUNNING  # lock freed


def test_wait_wakes_when_its_run_ends_not_at_its_next_look(progress: Progress, monkeypatch):
    """The run's end is published (keys.RUNS_ENDED): wait() returns then, not after its poll."""
    run = progress.create_run("api", "a")
    first_read = threading.Event()
    get = progress.get

    def reading(run_id: str) -> Run | None:
        got = get(run_id)
        first_read.set()
        return got

    def end() -> None:
        assert first_read.wait(10)
        assert progress.finish(run, RunState.SUCCEEDED)

    monkeypatch.setattr(progress, "get", reading)
    ender = threading.Thread(target=end)
    ender.start()
    began = time.monotonic()
    runs = watch.wait(progress, [run.run_id], show=False, stall_seconds=60, poll=60,
                      workers=lambda: ["w"])
    ender.join()
    assert [r.state for r in runs] == [RunState.SUCCEEDED]
    assert time.monotonic() - began < 30  # its poll is 60 s: the channel woke it


def test_run_sends_its_runs_with_the_collector_off_and_turns_it_back_on(
        config: Path, progress: Progress, monkeypatch):
    import gc

    from tasks import start

    seen = []

    def start_runs(*args: Any, **kwargs: Any) -> list[Run]:
        seen.append(gc.isenabled())
        return []

    monkeypatch.setattr(start, "start_runs", start_runs)
    assert gc.isenabled()
    result = CliRunner().invoke(sluice, ["run", "tracker", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert seen == [False] and gc.isenabled()
    gc.disable()  # a caller that had it off keeps it off
    try:
        CliRunner().invoke(sluice, ["run", "tracker", "--config", str(config)])
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_the_entry_point_freezes_the_heap_at_exit(monkeypatch):
    import atexit
    import gc

    registered: list[Any] = []
    monkeypatch.setattr(atexit, "register", registered.append)
    assert main(["--help"]) == 0
    assert registered == [gc.freeze]


def test_the_command_imports_the_cli_with_the_collector_off_then_turns_it_back_on():
    """In a fresh interpreter, as the `sluice` script starts (tasks/operator/entry.py)."""
    import subprocess
    import sys

    probe = """
import gc, sys
seen = []
class Spy:
    def find_spec(self, name, path=None, target=None):
        if name == "tasks.operator.cli":
            seen.append(gc.isenabled())
sys.meta_path.insert(0, Spy())
from tasks.operator import entry
code = entry.main(["--help"])
print(seen, gc.isenabled(), code)
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[2]).stdout
    assert out.splitlines()[-1] == "[False] True 0"
