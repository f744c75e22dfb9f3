"""``tasks.boundary.Guard``: retry (the hint, capped; else the backoff of Settings) or give up
with a ``DeadLetter`` that reads back as it was written."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

from integrations.errors import MalformedPage, TargetUnavailable, TransientHTTPError
from tasks.boundary import Guard
from tasks.runs.deadletter import DeadLetter
from tasks.settings import Settings

SETTINGS = Settings(ingest_backoff=2.0, ingest_max_backoff=30.0)


class Retried(Exception):
    """What the fake task's ``retry`` hands back (Celery's is ``Retry``)."""


class FakeTask:
    """A bound task on its ``retries``-th retry; ``countdowns``: what it was asked to wait."""

    def __init__(self, retries: int) -> None:
        self.request = SimpleNamespace(retries=retries)
        self.countdowns: list[float] = []

    def retry(self, *, exc: Exception, countdown: float) -> Exception:
        self.countdowns.append(countdown)
        return Retried(str(exc))


def attempt(task: FakeTask | None, exc: Exception, *, retries: int = 3) -> Guard:
    with Guard(task, SETTINGS, retries=retries) as guard:
        raise exc
    return guard


def test_a_retryable_error_with_a_hint_waits_what_the_api_asked() -> None:
    task = FakeTask(retries=0)
    with pytest.raises(Retried):
        attempt(task, TransientHTTPError("429", retry_after=7.0))
    assert task.countdowns == [7.0]


def test_a_hint_longer_than_the_settings_allow_is_capped() -> None:
    task = FakeTask(retries=1)
    with pytest.raises(Retried):
        attempt(task, TargetUnavailable("503", retry_after=3600.0))
    assert task.countdowns == [30.0]


@pytest.mark.parametrize(("retries", "ceiling"), [(0, 2.0), (2, 8.0), (4, 30.0)])
def test_without_a_hint_the_backoff_of_the_settings(retries: int, ceiling: float) -> None:
    task = FakeTask(retries=retries)
    with pytest.raises(Retried):
        attempt(task, TargetUnavailable("down"), retries=5)
    [waited] = task.countdowns
    assert ceiling / 2 <= waited <= ceiling  # equal jitter: half fixed, half random


def test_past_its_retries_a_retryable_error_is_kept_with_its_attempts() -> None:
    task = FakeTask(retries=3)
    guard = attempt(task, TargetUnavailable("down"), retries=3)
    assert task.countdowns == []
    assert isinstance(guard.error, TargetUnavailable) and guard.exhausted
    letter = guard.letter("batch", "api", "issue", [{"id": 1}], seq=4)
    assert letter.attempts == 4 and letter.error.startswith("TargetUnavailable: down (at ")
    assert (letter.task, letter.source, letter.kind, letter.seq, letter.root) == (
        "batch", "api", "issue", 4, None)


def test_a_permanent_error_or_a_bug_is_never_retried() -> None:
    task = FakeTask(retries=0)
    assert not attempt(task, MalformedPage("not JSON")).exhausted
    assert isinstance(attempt(task, KeyError("x")).error, KeyError)
    assert task.countdowns == []


def test_without_a_task_nothing_is_retried() -> None:
    guard = attempt(None, TargetUnavailable("down", retry_after=1.0))
    assert guard.exhausted and guard.attempts == 1


def test_a_body_that_finishes_leaves_no_error_and_an_interrupt_goes_through() -> None:
    with Guard(FakeTask(retries=0), SETTINGS, retries=3) as guard:
        pass
    assert guard.error is None
    with pytest.raises(KeyboardInterrupt), Guard(FakeTask(0), SETTINGS, retries=3):
        raise KeyboardInterrupt


def test_a_dead_letter_reads_back_as_it_was_written() -> None:
    letter = DeadLetter(task="children", source="api", kind="comment", items=[{"number": 1}],
                        error="TransientHTTPError: 503", attempts=6, at=1.5, seq=7,
                        root="issue")
    assert DeadLetter.from_json(letter.to_json()) == letter
    assert DeadLetter.from_json(letter.to_json().encode()) == letter
    assert letter.count == "1"
    undecodable = DeadLetter(task="batch", source="api", kind="issue", items="[[[", error="x",
                             attempts=1, at=0.0)
    assert DeadLetter.from_json(undecodable.to_json()).count == "undecodable"


@pytest.mark.parametrize(("written", "task", "items"), [
    ({"source": "api", "kind": "issue", "seq": 3, "items": [1], "error": "e", "attempts": 2,
      "at": 1.0}, "batch", [1]),
    ({"kind": "issue", "events": [{"item": {}}], "error": "e", "attempts": 2, "at": 1.0},
     "webhook", [{"item": {}}]),
])
def test_a_dead_letter_written_before_the_type_still_reads(written: dict[str, Any], task: str,
                                                            items: Any) -> None:
    letter = DeadLetter.from_json(json.dumps(written), source="api")
    assert (letter.task, letter.source, letter.items, letter.attempts) == (task, "api", items, 2)
