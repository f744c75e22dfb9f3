"""`sluice standalone`: the README's first command, and Ctrl-C leaving nothing behind."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tasks.operator.redisserver import free_port
from tests.support.workers import SLUICE

pytestmark = pytest.mark.integration


def standalone_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    return env


def _ignore_sigint() -> None:
    """As a script's background job starts: SIGINT ignored, inherited from its shell (a
    Ctrl-C sent to standalone must still stop it)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def descendants(pid: int) -> set[int]:
    found: set[int] = set()
    todo = [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").glob("*"):
            for child in (task / "children").read_text().split():
                found.add(int(child))
                todo.append(int(child))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_standalone_once_syncs_the_demo_into_sqlite(tmp_path: Path):
    port = free_port()
    done = subprocess.run(
        [*SLUICE, "standalone", "--once", f"--flower-port={port}",
         f"--serve-port={free_port()}", "--logs", str(tmp_path / "logs")],
        cwd=tmp_path, env=standalone_env(), capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no sluice.toml" in done.stdout and "running the demo API" in done.stdout
    # The closing hint shows counts per kind, not rows.
    assert f"look at the data: sluice entities --db {tmp_path / 'sluice.db'}\n" in done.stdout
    for kind, count in (("issue", 3000), ("user", 700), ("project", 120), ("team", 45)):
        assert f"demo/{kind} run " in done.stdout
        assert f"succeeded; {count} written, 0 rejected, 0 batches failed" in done.stdout
    with sqlite3.connect(tmp_path / "sluice.db") as db:
        assert dict(((k, n) for k, n in db.execute(
            "SELECT kind, COUNT(*) FROM entities GROUP BY kind"))) == {
            "issue": 3000, "user": 700, "project": 120, "team": 45}
    shown = subprocess.run([*SLUICE, "entities", "--db", "sluice.db",
                            "demo", "team", "--limit", "1"], cwd=tmp_path, env=standalone_env(),
                           capture_output=True, text=True, check=True).stdout
    assert json.loads(shown)["identifier"] == "team-0"


def test_standalone_runs_until_ctrl_c_then_stops_every_child(tmp_path: Path):
    port, serve_port = free_port(), free_port()
    proc = subprocess.Popen(
        [*SLUICE, "standalone", f"--flower-port={port}", f"--serve-port={serve_port}",
         "--logs", str(tmp_path / "logs")],
        cwd=tmp_path, env=standalone_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, preexec_fn=_ignore_sigint)
    try:
        lines: list[str] = []
        assert proc.stdout is not None
        deadline = time.monotonic() + 180
        while not any("running on schedule" in line for line in lines):
            assert time.monotonic() < deadline and proc.poll() is None, "".join(lines)
            lines.append(proc.stdout.readline())
        redis_url = next(line for line in lines
                         if line.startswith("redis: ")).split(" on ")[1].strip()
        redis_port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
        # Flower is up on loopback, without auth (the one place it may be), and saw the tasks.
        tasks = httpx.get(f"http://127.0.0.1:{port}/api/tasks", timeout=10).json()
        names = {t["name"] for t in tasks.values()}
        assert {"sluice.resync", "sluice.ingest_batch", "sluice.finalize"} <= names
        # The webhook endpoint is up, its address printed.
        assert f"webhooks: http://127.0.0.1:{serve_port}/webhooks/SOURCE\n" in lines
        assert httpx.get(f"http://127.0.0.1:{serve_port}/healthz", timeout=10).status_code == 200
        children = descendants(proc.pid)
        # redis-server, worker (threads pool: one process), beat, flower, serve
        assert len(children) >= 5

        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:  # a failed assertion above must not leave the whole stack running
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
    assert proc.returncode == 130, out
    assert "stopping" in out
    time.sleep(0.5)
    assert [pid for pid in children if alive(pid)] == []
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
    import redis

    with pytest.raises(redis.ConnectionError):
        redis.Redis(port=redis_port, socket_connect_timeout=1).ping()


def test_standalone_runs_the_sluice_toml_of_its_directory_not_the_demo(tmp_path: Path):
    """./sluice.toml is read (here a typo in it stops the start, naming the file and key)."""
    (tmp_path / "sluice.toml").write_text(
        '[sources.api]\nintegration = "rest"\nbase_url = "http://127.0.0.1:9"\nmax_in_fligth = 3\n'
        '[sources.api.kinds.item]\npath = "/item"\n')
    done = subprocess.run(
        [*SLUICE, "standalone", "--once", f"--flower-port={free_port()}",
         f"--serve-port={free_port()}", "--logs", str(tmp_path / "logs")],
        cwd=tmp_path, env=standalone_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert f"config: {tmp_path / 'sluice.toml'} (./sluice.toml)" in done.stdout
    assert "demo" not in done.stdout
    assert "sluice.toml" in done.stderr and "max_in_fligth" in done.stderr, done.stderr
