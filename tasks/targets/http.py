"""HTTP bulk target: POST ``{"entities": [...]}`` per batch. It does not delete."""

from __future__ import annotations

import httpx

from integrations.errors import TargetRejected, TargetUnavailable
from tasks.targets.base import Deletion, Entity


class HttpTarget:
    supports_delete = False
    # httpx.Client is thread-safe: one per process, one connection pool (and one TLS context,
    # whose creation costs ~40 ms of CPU) for every thread of the threads pool.
    thread_safe = True

    def __init__(self, url: str, *, headers: dict[str, str] | None = None, timeout: float = 30.0):
        self.url = url
        self._client = httpx.Client(headers=headers or {}, timeout=timeout)

    def upsert(self, entities: list[Entity], *, run_id: str) -> None:
        if not entities:
            return
        first = entities[0]
        url = self.url.format(kind=first["kind"], source=first["source"])
        try:
            response = self._client.post(url, json={"entities": entities})
        except httpx.TransportError as exc:
            raise TargetUnavailable(f"POST {url}: {exc!r}") from exc
        if response.status_code == 429 or response.status_code >= 500:
            raise TargetUnavailable(f"POST {url} answered {response.status_code}")
        if response.status_code >= 400:
            raise TargetRejected(f"POST {url} answered {response.status_code}: {response.text[:200]}")

    def delete_stale(self, source: str, kind: str, *, run_id: str, threshold: float) -> Deletion:
        return Deletion(refused="the http target does not delete stale entities")

    def close(self) -> None:
        self._client.close()
