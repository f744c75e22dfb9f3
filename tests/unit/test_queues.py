"""Which task goes to which queue (tasks/messages.py), on kombu's in-memory broker: a client app
that knows only the broker sends, and the message is looked for in each of the queues the
workers declare."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from celery import Celery

from tasks import messages
from tasks.app import app as worker_app


@pytest.fixture
def client() -> Iterator[Celery]:
    client = Celery("routing-test", broker="memory://")
    client.conf.update(task_serializer="json", accept_content=["json"])
    yield client
    client.close()


def queue_of(client: Celery, send: Callable[[Celery], None]) -> str:
    """The one queue of ``messages.QUEUES`` the message ``send`` publishes lands in."""
    send(client)
    found = []
    with client.connection_for_read() as conn:
        channel = conn.default_channel
        for name in messages.QUEUES:
            channel.queue_declare(name, passive=False)
            while channel.basic_get(name, no_ack=True) is not None:
                found.append(name)
    assert len(found) == 1, found
    return found[0]


SENDS: dict[str, tuple[Callable[[Celery], Any], str]] = {
    "resync": (lambda a: messages.resync(a, "s", "k", "r1"), messages.PRODUCERS),
    "resync of a partition": (lambda a: messages.resync(a, "s", "k", "r1", partition=2),
                              messages.PRODUCERS),
    "a batch of a small run": (lambda a: messages.batch(a, "r1", "s", "k", 1, [1], run_seq=1),
                               messages.BATCHES),
    "a backfill's batch": (lambda a: messages.batch(a, "r1", "s", "k", 1, [1], run_seq=1,
                                                    bulk=True), messages.BULK),
    "children": (lambda a: messages.children(a, "r1", "s", "c", 1, "[]", run_seq=1, count=0,
                                             root="k"), messages.BATCHES),
    "finalize": (lambda a: messages.finalize(a, "r1"), messages.URGENT),
    "webhook batch": (lambda a: messages.webhook(a, "s", "k", "b1", "[]", count=0),
                      messages.URGENT),
}


@pytest.mark.parametrize("what", SENDS)
def test_each_task_goes_to_its_queue(client: Celery, what: str):
    send, queue = SENDS[what]
    assert queue_of(client, send) == queue


def test_a_worker_without_q_consumes_every_queue_sluice_sends_to():
    declared = worker_app.amqp.queues
    assert set(declared.consume_from) == set(messages.QUEUES) == {q for _, q in SENDS.values()}
    # declared as a client declares a queue it only names: a direct exchange of its name
    for name in messages.QUEUES:
        queue = declared[name]
        assert (queue.exchange.name, queue.exchange.type, queue.routing_key) == \
            (name, "direct", name)
    assert worker_app.conf.task_default_queue == messages.BATCHES  # what older versions sent to


def test_a_backfill_takes_the_fleet_alone_and_keeps_to_its_cap_while_other_work_waits() -> None:
    import fakeredis

    from tasks.resync import Slice
    from tasks.settings import Settings

    r = fakeredis.FakeRedis()
    producer = Slice.__new__(Slice)  # only the parts the cap reads
    producer.rt = SimpleNamespace(redis=r, settings=Settings(bulk_after_items=10,
                                                             bulk_max_in_flight=4))
    producer.src = SimpleNamespace(max_in_flight=32)

    def cap() -> int:
        return producer.max_in_flight(producer.bulk() and producer.others_wait())

    producer.items_read = 9  # not a backfill yet: its source's max_in_flight, whatever waits
    r.rpush(messages.BATCHES, "a small run's batch")
    assert cap() == 32
    producer.items_read = 10  # a backfill, while another run's batch waits
    assert cap() == 4
    r.delete(messages.BATCHES)
    r.rpush(messages.BULK, "its own batch")  # only its own work waits: the whole fleet
    assert cap() == 32
    for queue in (messages.URGENT, messages.PRODUCERS):
        r.rpush(queue, "a webhook batch, or another run's next pages")
        assert cap() == 4
        r.delete(queue)
    # On RabbitMQ the queues are not seen: the cap holds.
    producer.rt.settings = Settings(bulk_after_items=10, bulk_max_in_flight=4,
                                    broker_url="amqp://guest@127.0.0.1//")
    assert cap() == 4
