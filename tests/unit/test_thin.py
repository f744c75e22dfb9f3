"""``sluice run``'s thin start (tasks/operator/thin.py): its argv, its Redis client
(tasks/operator/resp.py) against a real Redis server, and its message against the one Celery
and kombu write."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
import redis

from tasks import envelope
from tasks.digest import config_digest, file_digest
from tasks.operator import resp, thin
from tasks.operator.redisserver import RedisServer
from tasks.runs import keys
from tests.support.workers import ROOT


@pytest.mark.parametrize(("argv", "expected"), [
    (["run", "gh"], thin.RunArgs("gh")),
    (["run", "gh", "--kind", "issue", "--kind=pr", "--wait", "--json", "--full"],
     thin.RunArgs("gh", ("issue", "pr"), wait=True, as_json=True, full=True)),
    (["--config", "a.toml", "run", "--wait", "gh", "--config=b.toml"],
     thin.RunArgs("gh", wait=True, config="b.toml")),
    (["--config=a.toml", "run", "gh"], thin.RunArgs("gh", config="a.toml")),
])
def test_the_run_command_is_parsed(argv: list[str], expected: thin.RunArgs) -> None:
    assert thin.parse(argv) == expected


@pytest.mark.parametrize("argv", [
    [], ["status"], ["run"], ["run", "--help"], ["run", "gh", "-h"], ["run", "gh", "extra"],
    ["run", "gh", "--kind"], ["run", "gh", "--limit", "3"], ["--verbose", "run", "gh"],
    ["--config"], ["run", "gh", "--", "x"], ["check", "run"]])
def test_anything_else_goes_to_the_click_cli(argv: list[str]) -> None:
    assert thin.parse(argv) is None


@pytest.mark.parametrize(("env", "handled"), [
    ({}, True),
    ({"SLUICE_REDIS_URL": "redis://:p%40ss@h:7000/3"}, True),
    ({"SLUICE_REDIS_URL": "unix:///run/redis.sock?db=2"}, True),
    ({"SLUICE_REDIS_URL": "rediss://h:6380/0"}, False),
    ({"SLUICE_REDIS_URL": "redis://h/0?socket_timeout=3"}, False),
    ({"SLUICE_BROKER_URL": "amqp://guest@h//"}, False),
    ({"SLUICE_BROKER_URL": "redis://127.0.0.1:6379/0"}, True),  # the same Redis
    ({"sluice_redis_url": "redis://h/1"}, False),  # pydantic-settings would read it
])
def test_which_redis_the_thin_path_handles(env: dict[str, str], handled: bool) -> None:
    assert (thin.redis_address(env) is not None) is handled


def test_without_a_url_the_thin_path_takes_the_settings_default() -> None:
    """``thin.DEFAULT_REDIS`` is written again (the thin path imports no pydantic): the same."""
    from tasks.settings import Settings

    assert Settings.model_fields["redis_url"].default == thin.DEFAULT_REDIS


def test_urls_are_read_as_redis_py_reads_them() -> None:
    a = resp.parse_url("redis://us%3Aer:p%40ss@example:7000/3")
    assert (a.host, a.port, a.username, a.password, a.db) == ("example", 7000, "us:er",
                                                               "p@ss", 3)
    a = resp.parse_url("unix://:secret@/run/redis.sock?db=2")
    assert (a.path, a.password, a.db) == ("/run/redis.sock", "secret", 2)
    assert "secret" not in repr(a) and "secret" not in str(a)


def test_the_digest_is_the_configurations(tmp_path) -> None:
    from tasks.config import load_config

    path = tmp_path / "sluice.toml"
    path.write_bytes(b'[sources.a]\r\nintegration = "rest"\r\nbase_url = "http://x"\r\n'
                     b'[sources.a.kinds.k]\r\npath = "/k"\r\n# caf\xc3\xa9\r\n')
    assert file_digest(path) == load_config(path).digest == config_digest(path.read_text())


@pytest.fixture
def own_server() -> Iterator[RedisServer]:
    """A Redis server of the test's own, whose default user has a password (and a user
    ``op`` another)."""
    with RedisServer() as server:
        r = redis.Redis(port=server.port)
        r.execute_command("ACL", "SETUSER", "op", "on", ">op-pass", "~*", "+@all")
        r.config_set("requirepass", "pa ss:w@rd")
        r.close()
        yield server


def test_the_client_speaks_to_a_real_redis(own_server: RedisServer) -> None:
    address = resp.Address(port=own_server.port, password="pa ss:w@rd", db=2)
    conn = resp.Connection(address)
    try:
        assert conn.call("SET", "k", "v", "EX", 30) == "OK"
        assert conn.pipeline([("GET", "k"), ("RPUSH", "l", "a", b"\x00b\r\n"),
                              ("LRANGE", "l", 0, -1), ("GET", "none"), ("INCR", "k")]) [:4] == [
            b"v", 2, [b"a", b"\x00b\r\n"], None]
        with pytest.raises(resp.RespError, match="not an integer"):
            conn.call("INCR", "k")
        assert conn.call("BLPOP", "empty", "0.1", timeout=2) is None
        assert conn.call("BLPOP", "l", "1") == [b"l", b"a"]
    finally:
        conn.close()
    r = redis.Redis(port=own_server.port, password="pa ss:w@rd", db=2)
    assert r.get("k") == b"v"  # SELECT 2 was sent
    r.close()
    with pytest.raises(resp.RespError):
        resp.Connection(resp.Address(port=own_server.port, password="wrong"))
    conn = resp.Connection(resp.parse_url(f"redis://op:op-pass@127.0.0.1:{own_server.port}/2"))
    assert conn.call("GET", "k") == b"v"
    conn.close()


def test_the_start_request_is_the_message_celery_writes(own_redis_url: str) -> None:
    """The thin client's message, byte for byte where it is not an id, with its wake token,
    is what ``app.send_task`` writes through kombu's Redis transport and Sluice's broker."""
    from tasks import messages

    kwargs = {"kinds": ["issue", "café"], "full": True, "digest": "0123abcd",
              "request": "r1"}
    r = redis.Redis.from_url(own_redis_url)
    r.flushdb()
    # Sluice's app in a process of its own: built here, it would take this Redis for the
    # broker of every later test in this process (tests/conftest.py).
    send = ("import json, sys\n"
            "from tasks import messages\n"
            "from tasks.app import app\n"
            "app.send_task(messages.START, ['gh'], json.loads(sys.argv[1]),"
            " argsrepr='gh kinds=issue', kwargsrepr='{}', task_id='id-1',"
            " queue=messages.URGENT)\n")
    done = subprocess.run([sys.executable, "-c", send, json.dumps(kwargs)], cwd=ROOT,
                          env={**os.environ, "SLUICE_REDIS_URL": own_redis_url},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    (celery_wrote,) = r.lrange(messages.URGENT, 0, -1)
    assert r.lrange(keys.fetch_wake(messages.URGENT), 0, -1) == [b"1"]
    r.delete(messages.URGENT, keys.fetch_wake(messages.URGENT))

    url = resp.parse_url(own_redis_url)
    conn = resp.Connection(url)
    mine = envelope.task_message(messages.START, ["gh"], kwargs, task_id="id-1",
                                 queue=envelope.URGENT, argsrepr="gh kinds=issue")
    conn.pipeline(envelope.publish_commands(envelope.URGENT, mine))
    conn.close()
    (thin_wrote,) = r.lrange(messages.URGENT, 0, -1)
    assert r.lrange(keys.fetch_wake(messages.URGENT), 0, -1) == [b"1"]
    r.close()

    def ids_out(raw: bytes) -> dict:
        message = json.loads(raw)
        for key in ("delivery_tag", "reply_to"):
            assert message["properties"].pop(key)
        assert message["headers"].pop("origin").startswith("gen")
        return message

    a, b = ids_out(celery_wrote), ids_out(thin_wrote)
    assert a == b and json.dumps(a) == json.dumps(b)  # the same keys, in the same order
    assert a["body"] == b["body"]  # the body, JSON in the envelope (body_encoding "json")


def test_the_thin_path_imports_only_the_standard_library(tmp_path) -> None:
    """What ``sluice run`` imports before its request is out (here: nobody answers, the
    claim is taken back, and the test stops it before the ordinary way)."""
    code = ("import sys\n"
            "from tasks.operator import thin\n"
            "thin.FIRST_REPLY = 0.1\n"
            "args = thin.parse(sys.argv[1:])\n"
            "import os\n"
            "print(thin.start(args, os.environ))\n"
            "print(sorted(m.split('.')[0] for m in sys.modules if m.split('.')[0] in"
            " {'celery', 'kombu', 'redis', 'click', 'pydantic', 'httpx', 'rich',"
            " 'msgspec', 'opentelemetry'} and m != 'httpx._main'))\n")  # integrations/lean.py
    (tmp_path / "sluice.toml").write_text("x = 1\n")
    with RedisServer() as server:
        done = subprocess.run([sys.executable, "-c", code, "run", "gh",
                               f"--config={tmp_path / 'sluice.toml'}"], cwd=ROOT,
                              capture_output=True, text=True, timeout=60,
                              env={**os.environ, "SLUICE_REDIS_URL": server.url})
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines() == ["None", "[]"]
        r = redis.Redis(port=server.port)
        assert r.llen(envelope.URGENT) == 1  # the request was out
        assert not r.keys("sluice:start:*")  # and its claim taken back
        r.close()


def test_redis_lost_after_the_request_is_out_is_no_fallback(tmp_path) -> None:
    """Once the request may be out, a worker may start the runs: the command must not start
    them too (the ordinary way) when Redis goes away while it waits; it says so."""
    import threading
    import time

    (tmp_path / "sluice.toml").write_text("x = 1\n")
    args = thin.RunArgs("gh", config=str(tmp_path / "sluice.toml"))
    outcome: list[object] = []
    with RedisServer() as server:
        def ask() -> None:
            try:
                outcome.append(thin.start(args, {"SLUICE_REDIS_URL": server.url}))
            except thin.Failed as exc:
                outcome.append(exc)

        asker = threading.Thread(target=ask)
        asker.start()
        r = redis.Redis(port=server.port)
        deadline = time.monotonic() + 10
        while not r.keys(keys.start_claim("*")) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert r.llen(envelope.URGENT) == 1  # the request is out, nobody has answered
        r.close()
    asker.join(10)
    (failed,) = outcome
    assert isinstance(failed, thin.Failed) and "lost Redis" in str(failed), failed
