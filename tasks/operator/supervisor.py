"""Child processes, each in its own session, so that we stop them (and their own children).

``sluice standalone``, the test helpers and the benchmark start Redis, Celery workers, beat
and Flower through these two classes: one way to start, wait for, signal and stop a child.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path


def celery(*args: str) -> list[str]:
    """``python -m celery -A tasks ARGS``: the command line of every Celery process started."""
    return [sys.executable, "-m", "celery", "-A", "tasks", *args]


def child_pids(pid: int) -> list[int]:
    """The children of process ``pid``, whichever of its threads started them (a plain
    worker's sibling nodes are started by a thread of their own); [] once it is gone."""
    out: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return out
    for task in tasks:
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue  # the thread ended meanwhile
    return out


class Child:
    """One child process. Its output goes to ``log`` (appended), or nowhere."""

    def __init__(self, name: str, argv: list[str], *, log: Path | None = None,
                 env: Mapping[str, str] | None = None, cwd: Path | None = None) -> None:
        self.name = name
        self.argv = argv
        self.log = log
        self.env = {**os.environ, **(env or {})}
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Child:
        if self.log is None:
            self.process = subprocess.Popen(
                self.argv, env=self.env, cwd=self.cwd, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            return self
        with open(self.log, "ab") as out:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                self.argv, env=self.env, cwd=self.cwd, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True)
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self.name} was not started"
        return self.process.pid

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def tail(self, chars: int = 3000) -> str:
        """The end of its log (for an error message)."""
        if self.log is None or not self.log.exists():
            return ""
        return self.log.read_text(errors="replace")[-chars:]

    def wait_until(self, ready: Callable[[], bool], *, timeout: float = 60.0,
                   poll: float = 0.1) -> None:
        """Wait for ``ready()``; RuntimeError (with the log's end) when the child exits first
        or ``timeout`` seconds pass."""
        deadline = time.monotonic() + timeout
        while not ready():
            if not self.running() or time.monotonic() > deadline:
                why = "exited" if not self.running() else f"not ready after {timeout:.0f} s"
                raise RuntimeError(f"{self.name} {why}; its log ends:\n{self.tail()}")
            time.sleep(poll)

    def children(self) -> list[int]:
        """The pids of its own children (a prefork worker's pool processes, the sibling nodes
        of a plain worker)."""
        return child_pids(self.pid)

    def signal(self, signum: int) -> None:
        """Send ``signum`` to its whole process group."""
        if self.running():
            os.killpg(self.pid, signum)

    def stop(self, *, timeout: float = 20.0) -> None:
        """SIGTERM to its group, then SIGKILL after ``timeout`` seconds."""
        self.signal(signal.SIGTERM)
        self.reap(time.monotonic() + timeout)

    def reap(self, deadline: float) -> None:
        if self.process is None:
            return
        try:
            self.process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(self.pid, signal.SIGKILL)
            self.process.wait()

    def __enter__(self) -> Child:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Supervisor:
    """Children started in order and stopped together: SIGTERM to every one (the last
    started first), then one deadline for all of them to exit."""

    def __init__(self, logs: Path | None = None) -> None:
        self.logs = logs
        self.children: dict[str, Child] = {}

    def start(self, name: str, argv: list[str], *, env: Mapping[str, str] | None = None,
              cwd: Path | None = None) -> Child:
        log = None if self.logs is None else self.logs / f"{name}.log"
        child = Child(name, argv, log=log, env=env, cwd=cwd).start()
        self.children[name] = child
        return child

    def dead(self) -> list[str]:
        return [name for name, child in self.children.items() if not child.running()]

    def stop(self, *, timeout: float = 20.0) -> None:
        children = list(self.children.values())[::-1]
        for child in children:
            child.signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for child in children:
            child.reap(deadline)

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
