"""What a worker process keeps for its whole life: one event loop, one ``httpx.AsyncClient``
per source it has run (built on first use, all sharing one TLS context), one target
connection per thread, one Redis client.

Celery tasks are synchronous. ``asyncio.run`` per task would close the loop that a shared
client's connections belong to ("Event loop is closed"), so each process creates one loop
(at ``worker_process_init``, or on first use after a fork), runs it in a thread of its own,
and every task hands its coroutines to it. That works the same for the prefork pool (one task
at a time per process) and the threads pool (``-P threads``: several tasks at once per
process, for targets where a write mostly waits).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import threading
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import redis

from integrations import secrets
from integrations.base import Integration
from integrations.errors import ConfigError, SluiceError
from integrations.http.client import tls_context
from integrations.registry import load
from tasks.config import SluiceConfig, get_config, load_config
from tasks.runs.client import connect_redis
from tasks.runs.progress import Progress
from tasks.runs.watermarks import Watermarks
from tasks.runs.windows import Windows
from tasks.settings import Settings, get_settings
from tasks.targets import Target, open_target
from tasks.worker import logs
from tasks.worker.ratelimit import RedisRateLimiter
from tasks.worker.tokens import RedisTokenStore

T = TypeVar("T")
log = logging.getLogger(__name__)


def _stamp(path: Path) -> tuple[int, int, int] | None:
    """What tells that a file changed: its inode, size and modification time."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class Runtime:
    """``redis_client``: the Redis the run records live in, when not ``settings.redis_url``
    (unit tests of the stages hand in a fakeredis client here)."""

    def __init__(self, settings: Settings, config: SluiceConfig, *,
                 redis_client: redis.Redis | None = None) -> None:
        self.settings = settings
        self.config = config
        self._config_stamp = _stamp(config.path)
        self.reload_error: str | None = None  # why the edited sluice.toml was not taken
        self.loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                             name="sluice-event-loop")
        self._loop_thread.start()
        self.redis = (connect_redis(settings.redis_url, role="runtime") if redis_client is None
                      else redis_client)
        self.progress = Progress.from_settings(settings, self.redis)
        self.windows = Windows(self.redis)
        self._redact_with(config)
        self._lock = threading.RLock()
        self._integrations: dict[str, Integration] = {}
        self._clients: dict[str, httpx.AsyncClient] = {}
        self._gates: dict[str, asyncio.Semaphore] = {}
        self._local = threading.local()
        self._targets: list[Target] = []
        self._retired: list[httpx.AsyncClient | Target] = []  # closed when the process ends

    def refresh(self, *, force: bool = False) -> None:
        """Take sluice.toml again when the file changed since it was loaded (one ``stat`` per
        task). An edited file that is not valid is not taken: the worker goes on with what it
        had, logs why, and a run started from the new file fails naming the problem."""
        stamp = _stamp(self.config.path)
        if stamp == self._config_stamp and not force:
            return
        with self._lock:
            if stamp == self._config_stamp and not force:
                return
            self._config_stamp = stamp
            try:
                config = load_config(self.config.path)
            except ConfigError as exc:
                self.reload_error = str(exc)
                log.error("sluice.toml changed but is not valid; going on with the configuration "
                          "loaded before: %s", exc)
                return
            self.reload_error = None
            if config.digest == self.config.digest:
                return
            log.info("%s changed: configuration loaded again", config.path)
            old, self.config = self.config, config
            for source in list(self._integrations):
                if old.sources.get(source) != config.sources.get(source):
                    del self._integrations[source]
                    for name in (source, f"{source}\0webhook"):
                        if name in self._clients:
                            self._retired.append(self._clients.pop(name))
            if old.target != config.target:
                self._retired += self._targets
                self._targets = []
                self._local = threading.local()
            self._redact_with(config)

    def _redact_with(self, config: SluiceConfig) -> None:
        """The configuration's secrets are masked wherever this process writes: the run
        records, the logs, the error excerpts."""
        self.progress.redactor = config.redactor
        logs.install(config.redactor)
        secrets.install(config.redactor)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine to completion on this process's loop; returns or raises its result.
        A caller interrupted while it waits (SystemExit from a signal) cancels the coroutine."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    def integration(self, source: str) -> Integration:
        with self._lock:
            if source not in self._integrations:
                self._integrations[source] = load(self.config.source(source))
            return self._integrations[source]

    def gate(self, source: str) -> asyncio.Semaphore:
        """The source's ``max_concurrency``, shared by every task of this process (on its
        loop): children of many parents are asked for that many at a time."""
        with self._lock:
            if source not in self._gates:
                self._gates[source] = asyncio.Semaphore(self.config.source(source).max_concurrency)
            return self._gates[source]

    def client(self, source: str, *, webhook: bool = False) -> httpx.AsyncClient:
        """The source's client, created once and reused by every task of this process;
        ``webhook``: the one for webhook follow-up fetches, which takes the share of the
        source's rate limit kept for them (``webhook_reserve``)."""
        integration = self.integration(source)
        name = f"{source}\0webhook" if webhook else source
        with self._lock:
            if name not in self._clients:
                settings = self.config.source(source)
                # A source that takes no webhooks keeps its whole limit for resyncs.
                reserve = settings.webhook_reserve if settings.webhook_secret else 0.0
                limiter = RedisRateLimiter(self.redis, source, rate=settings.rate_limit,
                                           burst=settings.rate_limit_burst,
                                           max_pause=settings.http.max_retry_after,
                                           reserve=reserve, webhook=webhook)
                self._clients[name] = integration.client(
                    limiter=limiter, redactor=self.config.redactor,
                    tokens=RedisTokenStore(self.redis, source, target=self.target),
                    secret_key=self.settings.secret_key.get_secret_value()
                    if self.settings.secret_key else None)
            return self._clients[name]

    def warm(self) -> None:
        """Build the TLS context the clients share and the target now, not in the first task.
        A source's integration and client are built by the first task that needs them, so a
        process holds those of the sources it runs, not of every source configured."""
        tls_context()
        try:
            self.target()
        except SluiceError as exc:  # down or misconfigured: the first batch retries or says why
            log.warning("target not opened at start: %s", exc)
        tune_gc()

    def watermarks(self) -> Watermarks:
        """Where this process's target keeps the watermarks of incremental kinds."""
        return Watermarks(self.target(), self.redis)

    def target(self) -> Target:
        """The target: one per process when it is thread-safe, else one per thread (SQLite
        and psycopg connections are not shared between threads)."""
        target: Target | None = getattr(self._local, "target", None)
        if target is None:
            with self._lock:
                if self._targets and self._targets[0].thread_safe:
                    target = self._targets[0]
                else:
                    target = open_target(self.config.target, run=self.run)
                    self._targets.append(target)
            self._local.target = target
        return target

    def close(self) -> None:
        for client in [*self._clients.values(),
                       *(c for c in self._retired if isinstance(c, httpx.AsyncClient))]:
            self.run(client.aclose())
        self._clients.clear()
        for target in [*self._targets,
                       *(t for t in self._retired if not isinstance(t, httpx.AsyncClient))]:
            target.close()
        self._targets.clear()
        self._retired.clear()
        self.run(self.loop.shutdown_default_executor())  # the producers' Redis calls ran there
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._loop_thread.join(5)
        self.loop.close()
        self.redis.close()


# Objects allocated before the cyclic collector runs again. A decoded page of 500 items is
# some 15,000 dicts and lists, none of them in a cycle: at Python's default of 700 the
# collector ran some twenty times per page, and each older-generation pass walked the
# worker's whole heap (a fast API's run spent more time there than in decoding).
GC_THRESHOLD = (50_000, 20, 100)
# But at that threshold a worker under a steady, light load (ops/bench/SOAK.md: small runs and
# webhooks) makes a young pass about once a minute, an older one every twenty minutes and a
# full one about once a day. What is alive at a young pass (a task's frames, coroutines,
# responses, a caught exception and its traceback) and later dies in a cycle stays until
# then: the worker's RSS rose by 1-2 MB a minute. So a full pass also runs on a clock; on the
# ~50,000 objects left outside the frozen ones it costs a few milliseconds.
FULL_GC_EVERY = 60.0  # seconds


def tune_gc() -> None:
    """A worker process's collector: what is loaded at start (modules, the configuration, the
    clients) is frozen out of its passes, it runs every ``GC_THRESHOLD`` allocations, and a
    full pass runs every ``FULL_GC_EVERY`` seconds whatever the allocations."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)
    FullCollections.start(FULL_GC_EVERY)


class FullCollections:
    """The thread that runs a full collection every ``every`` seconds: one per process (a
    forked child starts its own; threads do not survive a fork)."""

    _running: tuple[int, FullCollections] | None = None
    _lock = threading.Lock()

    def __init__(self, every: float) -> None:
        self.every = every
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="sluice-gc", daemon=True)

    @classmethod
    def start(cls, every: float) -> FullCollections:
        """This process's thread, started on the first call (later calls return it)."""
        with cls._lock:
            if cls._running is None or cls._running[0] != os.getpid():
                cls._running = (os.getpid(), cls(every))
                cls._running[1].thread.start()
            return cls._running[1]

    def _run(self) -> None:
        while not self.stopping.wait(self.every):
            gc.collect()

    @classmethod
    def stop(cls) -> None:
        """Stop this process's thread (tests; a worker's ends with the process)."""
        with cls._lock:
            running, cls._running = cls._running, None
        if running is not None and running[0] == os.getpid():
            running[1].stopping.set()
            running[1].thread.join()


# Set by a SIGTERM that arrives during a producer slice: the slice ends and is handed on.
STOPPING = threading.Event()


@contextmanager
def handing_on() -> Iterator[None]:
    """While a producer slice runs in a prefork child, SIGTERM sets ``STOPPING`` instead of
    ending the process at once (billiard's handler raises SystemExit wherever the task is).
    The slice then stops after the page in hand, its continuation is queued, and the task
    returns; the process ends when the pool closes (the main process got the SIGTERM too).
    In other threads (the threads pool) Celery's own warm shutdown already waits."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, lambda signum, frame: STOPPING.set())
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        if STOPPING.is_set():
            STOPPING.clear()
            log.warning("SIGTERM during a producer slice: the slice was handed on")


_current: Runtime | None = None
_pid: int | None = None
_creating = threading.Lock()


def current() -> Runtime:
    """This process's runtime; a forked child builds its own instead of inheriting one."""
    global _current, _pid
    if _current is None or _pid != os.getpid():
        with _creating:
            if _current is None or _pid != os.getpid():
                settings = get_settings()
                _current = Runtime(settings, get_config(settings.config))
                _pid = os.getpid()
    _current.refresh()
    return _current


def shutdown() -> None:
    global _current
    if _current is not None and _pid == os.getpid():
        _current.close()
    _current = None
