"""HTTP bulk target: POST ``{"entities": [...]}`` per batch. It does not delete.

Each POST has a deadline for the whole exchange (connect, send, every read): httpx's timeout
holds for each read, so a sink that trickles its answer would otherwise hold the batch for
ever. The deadline needs asyncio, so the requests run on the worker process's event loop
(``run``: ``Runtime.run``), from an ``httpx.AsyncClient`` that belongs to that loop.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from typing import Any

import httpx

from integrations.errors import TargetRejected, TargetUnavailable
from integrations.http.client import unbound
from integrations.secrets import excerpt
from tasks.targets.base import Deletion, Entity, Within, bad_text

Runner = Callable[[Coroutine[Any, Any, Any]], Any]


class HttpTarget:
    supports_delete = False
    # One client per process, one connection pool (and one TLS context, whose creation costs
    # ~40 ms of CPU) for every thread of the threads pool, all on the process's loop.
    thread_safe = True

    def __init__(self, url: str, *, run: Runner, headers: dict[str, str] | None = None,
                 timeout: float = 30.0, deadline: float = 120.0):
        self.url = url
        self.deadline = deadline
        self._run = run
        self._client = httpx.AsyncClient(headers=headers or {}, timeout=timeout)

    def upsert(self, entities: list[Entity], *, run_id: str, run_seq: int) -> None:
        if not entities:
            return
        first = entities[0]
        url = self.url.format(kind=first["kind"], source=first["source"])
        try:
            body = json.dumps({"entities": entities}, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as exc:  # a lone surrogate: ``unstorable`` names the item
            raise TargetRejected(f"POST {url}: {exc}") from exc
        response = self._run(self._post(url, body))
        if response.status_code == 429 or response.status_code >= 500:
            raise TargetUnavailable(f"POST {url} answered {response.status_code}")
        if response.status_code >= 400:
            raise TargetRejected(f"POST {url} answered {response.status_code}: "
                                 f"{excerpt(response.text, 200)}")

    async def _post(self, url: str, body: bytes) -> httpx.Response:
        try:
            async with asyncio.timeout(self.deadline):
                return unbound(await self._client.post(  # the batch's body goes with it
                    url, content=body, headers={"Content-Type": "application/json"}))
        except TimeoutError:
            raise TargetUnavailable(
                f"POST {url}: no whole answer within the deadline of {self.deadline:g} s") from None
        except httpx.TransportError as exc:
            raise TargetUnavailable(f"POST {url}: {exc!r}") from exc

    def unstorable(self, entity: Entity) -> str | None:
        return bad_text(entity["identifier"]) or bad_text(entity["data"])

    def delete_stale(self, source: str, kind: str, *, run_seq: int, threshold: float,
                     watermarks: dict[str, str] | None = None, within: Within | None = None
                     ) -> Deletion:
        raise NotImplementedError("the http target does not delete (supports_delete is False)")

    def close(self) -> None:
        self._run(self._client.aclose())
