"""tasks.ids: task ids and delivery tags are UUID4 texts, distinct, also across a fork."""

from __future__ import annotations

import os
import uuid

from kombu.transport import redis as kombu_redis

from tasks.ids import new_id
from tasks.worker import broker


def test_ids_are_uuid4_texts_and_distinct() -> None:
    ids = [new_id() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    for text in ids[:200]:
        parsed = uuid.UUID(text)
        assert str(parsed) == text and parsed.version == 4
        assert parsed.variant == uuid.RFC_4122


def test_a_forked_child_makes_other_ids_than_its_parent() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, to the parent
        os.close(read)
        os.write(write, " ".join(new_id() for _ in range(50)).encode())
        os._exit(0)
    os.close(write)
    theirs = b""
    while chunk := os.read(read, 65536):
        theirs += chunk
    os.close(read)
    os.waitpid(pid, 0)
    ours = {new_id() for _ in range(50)}
    assert len(theirs.split()) == 50
    assert not ours & set(theirs.decode().split())


def test_the_redis_transport_tags_messages_with_them() -> None:
    broker.install()
    tag = kombu_redis.Channel._next_delivery_tag(object())
    assert uuid.UUID(tag).version == 4
