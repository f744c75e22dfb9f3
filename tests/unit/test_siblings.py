"""The sibling command line (tasks/worker/siblings.py); the processes themselves are tested in
tests/integration/test_siblings.py."""

from __future__ import annotations

import os

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
