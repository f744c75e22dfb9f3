"""The sibling command line (tasks/worker/siblings.py); the processes themselves are tested in
tests/integration/test_siblings.py."""

from __future__ import annotations

import os
import signal
import threading

from tasks.worker import siblings


def test_a_sibling_runs_the_same_command_under_its_own_node_name() -> None:
    argv = ["/venv/bin/python", "/venv/bin/celery", "-A", "tasks", "worker", "-l", "INFO"]
    assert siblings.command(argv, "celery@box", 2) == [*argv, "-n", "celery-2@box"]
    assert siblings.command(argv, "w1", 1)[-2:] == ["-n", "w1-1"]


def test_a_sibling_neither_daemonizes_again_nor_takes_the_pid_file() -> None:
    argv = ["celery", "-A", "tasks", "worker", "--detach", "--pidfile", "/run/w.pid",
            "--pidfile=/run/w.pid", "-D", "-c", "4"]
    assert siblings.command(argv, "a@b", 1) == [
        "celery", "-A", "tasks", "worker", "-c", "4", "-n", "a-1@b"]


def test_zero_processes_means_one_per_usable_core() -> None:
    assert siblings.count(0) == len(os.sched_getaffinity(0))
    assert siblings.count(3) == 3


def test_one_process_starts_no_sibling() -> None:
    assert siblings.start("celery@box", 1) is None


def test_a_second_shutdown_signal_during_the_first_ones_dispatch_goes_through() -> None:
    """Celery dispatches worker_shutting_down from its signal handler; a second SIGTERM that
    lands while the first's dispatch holds the signal's lock must not wait on it forever."""
    from celery.signals import worker_shutting_down

    import tasks.app  # noqa: F401  (makes the lock reentrant, connects the receivers)
    from tasks.worker import runtime

    done = threading.Event()

    def nested() -> None:
        with worker_shutting_down.lock:  # the first signal's dispatch, interrupted
            worker_shutting_down.send(sender="test", sig="SIGTERM", how="Warm", exitcode=0)
        done.set()

    try:
        threading.Thread(target=nested, daemon=True).start()
        assert done.wait(30)
    finally:
        runtime.STOPPING.clear()


def test_the_watcher_outlives_a_shutdown() -> None:
    """The kernel sends a sibling its parent-death signal when the thread that started it
    ends, so the watcher thread must not end at the first node's shutdown."""
    group = siblings.Siblings(["true"], "w@h", 1).start()  # n=1: it starts no process
    group.signal(signal.SIGTERM)
    group._thread.join(2)
    assert group._thread.is_alive()
