"""tasks.worker.requests: with the pool in process, a batch's task gets the payload Celery's
consumer decoded (its body is not decoded a second time); otherwise the body as it came."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kombu.message import Message

from tasks.app import app
from tasks.ingest import ingest_batch
from tasks.worker import requests, wire


def batch_message() -> tuple[Message, list[Any]]:
    args = ["run-1", "src", "issue", 7, '[{"id": 1, "t": "a \\"quoted\\" word"}]']
    kwargs = {"run_seq": 3}
    embed = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
    body = wire.dumps([args, kwargs, embed])
    headers = {"lang": "py", "task": ingest_batch.name, "id": "t-1", "root_id": "t-1",
               "parent_id": None, "argsrepr": "batch", "kwargsrepr": "{}", "retries": 0}
    message = Message(body=body.encode(), content_type="application/json",
                      content_encoding="utf-8", headers=headers,
                      properties={"delivery_tag": "d-1"},
                      delivery_info={"exchange": "", "routing_key": "sluice"})
    message.accept = {"application/json"}
    return message, [args, kwargs, embed]


@pytest.fixture
def in_process() -> Iterator[None]:
    requests.IN_PROCESS = True
    yield
    requests.IN_PROCESS = False


def test_in_process_the_task_gets_the_decoded_payload(in_process: None) -> None:
    message, payload = batch_message()
    request = requests.DecodedOnce(message, app=app, task=ingest_batch, hostname="h")
    assert request.body == payload and request.content_type is None
    assert request.args == payload[0] and request.kwargs == payload[1]
    assert ingest_batch.Request == "tasks.worker.requests:DecodedOnce"


def test_otherwise_the_body_goes_to_the_pool_as_it_came() -> None:
    message, payload = batch_message()
    request = requests.DecodedOnce(message, app=app, task=ingest_batch, hostname="h")
    assert request.body == message.body and request.content_type == "application/json"
    assert request.args == payload[0]


def test_a_refused_content_type_is_refused_before_any_request(in_process: None) -> None:
    message, _ = batch_message()
    message.accept = {"application/x-python-serialize"}
    with pytest.raises(Exception, match="Refusing to deserialize untrusted content"):
        requests.DecodedOnce(message, app=app, task=ingest_batch, hostname="h")
