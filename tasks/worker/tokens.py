"""The fleet's ``TokenStore`` (``integrations.http.oauth``): OAuth 2.0 tokens shared in Redis,
the newest refresh token kept in Redis and in the target's state table.

Values arrive sealed; this module only moves text. Redis calls run off the event loop (the
client is synchronous), and so do the target's, on a connection of their own.
"""

from __future__ import annotations

import asyncio
import logging
import secrets as random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import cast

import redis

from integrations.errors import SluiceError, TransientHTTPError
from tasks.runs import keys
from tasks.targets import Target
from tasks.targets.base import Vault

log = logging.getLogger(__name__)

KEPT = "kept"  # the name of the kept refresh-token record (Redis and the target)

# Deletes a key only while it holds ARGV[1]: a lock this process still holds, a shared token
# no other process has replaced.
_DELETE_IF = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisTokenStore:
    """One source's tokens in Redis (``keys.oauth``); the kept record also in ``target()``
    when it keeps secrets (SQLite, PostgreSQL)."""

    def __init__(self, client: redis.Redis, source: str, *,
                 target: Callable[[], Target] | None = None) -> None:
        self.r = client
        self.source = source
        self._target = target

    async def get(self, name: str) -> str | None:
        value = await asyncio.to_thread(self.r.get, keys.oauth(self.source, name))
        return None if value is None else cast(bytes, value).decode()

    async def put(self, name: str, value: str, *, ttl: float) -> None:
        await asyncio.to_thread(self.r.set, keys.oauth(self.source, name), value,
                                px=max(1, int(ttl * 1000)))

    async def delete_if(self, name: str, value: str) -> None:
        await asyncio.to_thread(self.r.eval, _DELETE_IF, 1, keys.oauth(self.source, name),
                                value)

    def lock(self, name: str, *, timeout: float) -> AbstractAsyncContextManager[None]:
        return self._locked(keys.oauth(self.source, name), timeout)

    @asynccontextmanager
    async def _locked(self, key: str, timeout: float) -> AsyncIterator[None]:
        """SET NX with a lease longer than one token request; a holder that dies frees it
        when the lease runs out."""
        me = random.token_hex(8)
        give_up = time.monotonic() + timeout
        pause = 0.02
        while not await asyncio.to_thread(self.r.set, key, me, nx=True, px=int(timeout * 1000)):
            if time.monotonic() > give_up:
                raise TransientHTTPError(f"another process has refreshed {self.source}'s token "
                                         f"for over {timeout:g} s")
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.25)
        try:
            yield
        finally:
            await asyncio.to_thread(self.r.eval, _DELETE_IF, 1, key, me)

    async def kept(self) -> list[str]:
        found = []
        value = await asyncio.to_thread(self.r.get, keys.oauth(self.source, KEPT))
        if value is not None:
            found.append(cast(bytes, value).decode())
        stored = await asyncio.to_thread(self._stored)
        if stored is not None:
            found.append(stored)
        return found

    async def keep(self, value: str) -> None:
        """Redis first (quick), then the target; it is lost only if both fail."""
        kept = 0
        try:
            await asyncio.to_thread(self.r.set, keys.oauth(self.source, KEPT), value)
            kept += 1
        except redis.RedisError as exc:
            log.warning("%s: the refresh token was not kept in Redis: %s", self.source,
                        type(exc).__name__)
        try:
            kept += await asyncio.to_thread(self._store, value)
        except SluiceError as exc:
            log.warning("%s: the refresh token was not kept in the target: %s",
                        self.source, type(exc).__name__)
        if not kept:
            raise TransientHTTPError(f"{self.source}: the refresh token could not be kept "
                                     "(Redis and the target both failed)")

    # In the executor's thread: a target (a SQLite or psycopg connection) belongs to one.

    def _vault(self) -> Vault | None:
        target = None if self._target is None else self._target()
        return target if isinstance(target, Vault) else None

    def _stored(self) -> str | None:
        vault = self._vault()
        return None if vault is None else vault.secret(self.source, KEPT)

    def _store(self, value: str) -> int:
        vault = self._vault()
        if vault is None:
            return 0
        vault.keep_secret(self.source, KEPT, value)
        return 1
