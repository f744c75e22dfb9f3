"""Task ids and delivery tags: random UUID4 texts, made without a system call.

``uuid.uuid4()`` reads ``os.urandom``, which lets the GIL go for the call; the thread then
waits to get it back behind the process's busy threads (up to the 5 ms switch interval). A
batch's message took three of them in the producer (its task id, its delivery tag, the
task-sent event's tag) and more in each worker (the tags of its events), and the producer's
pages go out one after another. ``random``'s generator is seeded from ``os.urandom`` when it is
imported and again in every forked child, so these ids are as unique as uuid4's; none of them
is a secret.
"""

from __future__ import annotations

import random
import uuid

_bits = random.getrandbits


def new_id() -> str:
    """A random UUID (version 4) as text, like ``str(uuid.uuid4())``."""
    return str(uuid.UUID(int=_bits(128), version=4))
