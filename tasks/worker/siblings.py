"""A plain ``celery -A tasks worker`` uses every core: one threads-pool node per core.

The threads pool runs a node's tasks in one process, so one node is bound to one core by the
GIL: on a fast API its producer (fetch, parse, publish), Celery's consumer and the batches'
writes all take turns on it (ops/bench/BULK.md). Celery's answer is prefork, but a prefork
child runs one task at a time, and a producer slice then holds a whole child while the pages it
publishes wait. So, as gunicorn and uvicorn do with ``--workers``, the node started by the
command starts ``worker_processes - 1`` more of itself (the same command line, each its own
node: its own name, event loop, liveness record and reliable fetch), watches them and starts a
new one when one dies. ``SLUICE_WORKER_PROCESSES`` sets the count (0, the default: one per core
this process may run on; 1: no siblings). The prefork and solo pools are left as they are.

Stopping: a warm or cold shutdown of the first node is passed on (SIGTERM, SIGQUIT) and the
first node exits after its siblings. A sibling asks the kernel for SIGTERM when the first node
dies (``PR_SET_PDEATHSIG``), so a SIGKILLed first node does not leave them behind. A signal to
the whole process group (Ctrl-C, ``kill -- -PGID``, systemd) reaches them all at once.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

log = logging.getLogger(__name__)

SIBLING = "SLUICE_WORKER_SIBLING"  # set in a sibling's environment: its number (1, 2, ...)
PARENT = "SLUICE_WORKER_PARENT"  # the first node's pid, as the sibling was started
_PR_SET_PDEATHSIG = 1
# Options of the first node a sibling must not repeat: it would daemonize again, or fight
# over the pid file.
_DROP_WITH_VALUE = {"--pidfile"}
_DROP = {"--detach", "-D"}


def count(setting: int) -> int:
    """How many processes a node runs: the setting, or one per usable core for 0."""
    if setting:
        return setting
    usable = getattr(os, "sched_getaffinity", None)  # Linux; elsewhere every core counts
    return len(usable(0)) if usable else os.cpu_count() or 1


def is_sibling() -> bool:
    return SIBLING in os.environ


def die_with_parent() -> None:
    """In a sibling: have the kernel send SIGTERM when the first node dies, and leave now if
    it already has (it died before the request was made)."""
    if not is_sibling():
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: siblings then end with their group
        return
    if str(os.getppid()) != os.environ.get(PARENT):
        raise SystemExit("sluice: the worker node that started this one has gone")


def command(argv: Sequence[str], hostname: str, number: int) -> list[str]:
    """The sibling's command line: the first node's, under its own node name."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in _DROP_WITH_VALUE:
            skip = True
        elif arg not in _DROP and not any(arg.startswith(f"{o}=") for o in _DROP_WITH_VALUE):
            out.append(arg)
    name, _, host = hostname.partition("@")
    return [*out, "-n", f"{name}-{number}@{host}" if host else f"{name}-{number}"]


class Siblings:
    """The first node's siblings: started, restarted when they die, stopped with it."""

    RESTART_DELAY = (1.0, 30.0)  # the first restart's delay, doubled up to the second

    def __init__(self, argv: Sequence[str], hostname: str, n: int) -> None:
        self.argv, self.hostname, self.n = list(argv), hostname, n
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.stopping = threading.Event()
        # Reentrant: ``signal`` runs in a signal handler, and a second signal may arrive while
        # the first one's handler holds it.
        self._lock = threading.RLock()
        self._thread = threading.Thread(target=self._watch, name="sluice-siblings", daemon=True)

    def start(self) -> Siblings:
        log.info("this node runs %d worker processes (SLUICE_WORKER_PROCESSES: %s)",
                 self.n, os.environ.get("SLUICE_WORKER_PROCESSES", "one per core"))
        # The watcher thread starts them: PR_SET_PDEATHSIG follows the thread that started a
        # child, and this one lives as long as the process.
        self._thread.start()
        return self

    def _spawn(self, number: int) -> subprocess.Popen[bytes]:
        env = {**os.environ, SIBLING: str(number), PARENT: str(os.getpid())}
        return subprocess.Popen(command(self.argv, self.hostname, number), env=env)

    def _watch(self) -> None:
        first, cap = self.RESTART_DELAY
        delay = dict.fromkeys(range(1, self.n), first)
        due = dict.fromkeys(range(1, self.n), 0.0)  # when a missing sibling (re)starts
        born: dict[int, float] = {}
        while True:
            with self._lock:
                if self.stopping.is_set():
                    break
                now = time.monotonic()
                for number in range(1, self.n):
                    proc = self.procs.get(number)
                    if proc is None:
                        if now >= due[number]:
                            self.procs[number], born[number] = self._spawn(number), now
                    elif proc.poll() is not None:
                        delay[number] = first if now - born[number] > 60 else min(
                            delay[number] * 2, cap)
                        due[number] = now + delay[number]
                        del self.procs[number]
                        log.warning("worker process %d (pid %d) exited with %s; another "
                                    "starts in %.0f s", number, proc.pid, proc.returncode,
                                    delay[number])
            self.stopping.wait(0.5)
        # Not returned from while the process lives: the kernel sends the siblings this
        # thread started their PR_SET_PDEATHSIG when it ends, which would be a second SIGTERM
        # on top of the one ``signal`` passed on.
        threading.Event().wait()

    def signal(self, sig: int) -> None:
        """Pass a shutdown on: no sibling is started or restarted after this."""
        with self._lock:
            self.stopping.set()
            for proc in self.procs.values():
                if proc.poll() is None:
                    proc.send_signal(sig)

    def wait(self, timeout: float) -> None:
        """Wait for the siblings to end (their warm shutdown finishes their tasks), then
        SIGKILL what is left."""
        deadline = time.monotonic() + timeout
        for proc in list(self.procs.values()):
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker process %d did not stop in %.0f s: killed", proc.pid,
                            timeout)
                proc.kill()
                proc.wait()


def start(hostname: str, n: int) -> Siblings | None:
    """From the first node, once it is ready: its ``n - 1`` siblings (None when it has none, or
    is a sibling itself)."""
    if n <= 1 or is_sibling():
        return None
    return Siblings([sys.executable, *sys.orig_argv[1:]], hostname, n).start()
