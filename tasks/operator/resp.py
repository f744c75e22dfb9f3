"""A minimal Redis client (RESP2 over a socket) for ``sluice run``'s start request.

Why not redis-py: importing it (with ``redis.asyncio`` and what it pulls in) takes ~130 ms, a
quarter of what ``sluice run`` cost before its producer task was out. The start request needs
a handful of commands (AUTH, SELECT, SET, LPUSH, LTRIM, BLPOP, DEL), so this speaks the
protocol itself: commands out as arrays of bulk strings, replies parsed as they come. It takes
``redis://`` and ``unix://`` URLs with a user, a password and a database; anything else
(``rediss://``, query options it does not know) is ``Unsupported``, and the caller goes the
ordinary way (redis-py). Nothing here logs or formats the URL: it may hold the password.
"""

from __future__ import annotations

import socket
from typing import NamedTuple
from urllib.parse import parse_qs, unquote, urlsplit

Reply = bytes | int | str | list["Reply"] | None


class Unsupported(ValueError):
    """A URL this client does not handle (the caller uses redis-py instead)."""


class RespError(Exception):
    """Redis answered with an error (``-ERR ...``)."""


class Address(NamedTuple):
    host: str = "127.0.0.1"
    port: int = 6379
    path: str | None = None  # a unix socket
    username: str | None = None
    password: str | None = None
    db: int = 0

    def __repr__(self) -> str:  # never the password
        where = self.path or f"{self.host}:{self.port}"
        return f"Address({where}, db={self.db})"


def parse_url(url: str) -> Address:
    """``redis://[[user]:password@]host[:port][/db]`` or ``unix://[[user]:password@]/path
    [?db=N]``, as redis-py reads them (``password=`` and ``db=`` in the query too; the
    query's db before the path's, the URL's password before the query's)."""
    try:
        parts = urlsplit(url)
        query = {k: v[-1] for k, v in parse_qs(parts.query, strict_parsing=bool(parts.query)
                                               ).items()}
        port = parts.port
    except ValueError:
        raise Unsupported("not a URL this client reads") from None
    if parts.scheme not in ("redis", "unix") or set(query) - {"db", "password"} \
            or parts.fragment:
        raise Unsupported(f"{parts.scheme}:// or its options")
    path: str | None = None
    if parts.scheme == "unix":
        if not parts.path:
            raise Unsupported("no socket path")
        path, db_text = unquote(parts.path), query.get("db")
    elif not parts.hostname:
        raise Unsupported("no host")
    else:
        db_text = query.get("db") or parts.path.lstrip("/")
    try:
        db = int(db_text or 0)
    except ValueError:
        raise Unsupported("db is no number") from None
    return Address(host=unquote(parts.hostname or "") or "127.0.0.1", port=port or 6379,
                   path=path, username=unquote(parts.username) if parts.username else None,
                   password=unquote(parts.password) if parts.password
                   else query.get("password"), db=db)


def _encode(args: tuple[str | int | bytes, ...]) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class Connection:
    """One connection; ``pipeline`` sends several commands and reads their replies in order.
    A reply that is an error comes back as a ``RespError`` in the list (``call`` raises it)."""

    def __init__(self, address: Address, *, timeout: float = 5.0) -> None:
        self.timeout = timeout
        if address.path:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(address.path)
        else:
            self.sock = socket.create_connection((address.host, address.port), timeout)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.file = self.sock.makefile("rb")
        hello: list[tuple[str | int | bytes, ...]] = []
        if address.password is not None:
            hello.append(("AUTH", address.username, address.password) if address.username
                         else ("AUTH", address.password))
        if address.db:
            hello.append(("SELECT", address.db))
        for reply in self.pipeline(hello):
            if isinstance(reply, RespError):
                self.close()
                raise reply

    def pipeline(self, commands: list[tuple[str | int | bytes, ...]], *,
                 timeout: float | None = None) -> list[Reply | RespError]:
        """Send ``commands`` in one write; their replies. ``timeout``: how long to wait for
        them (a blocking command's own timeout plus a margin), else the connection's."""
        if not commands:
            return []
        self.sock.settimeout(self.timeout if timeout is None else timeout)
        self.sock.sendall(b"".join(_encode(c) for c in commands))
        return [self._read() for _ in commands]

    def call(self, *command: str | int | bytes, timeout: float | None = None) -> Reply:
        (reply,) = self.pipeline([command], timeout=timeout)
        if isinstance(reply, RespError):
            raise reply
        return reply

    def _read(self) -> Reply | RespError:
        line = self.file.readline()
        if not line.endswith(b"\r\n"):
            raise ConnectionError("Redis closed the connection")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return RespError(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            data = self.file.read(size + 2)
            if len(data) != size + 2:
                raise ConnectionError("Redis closed the connection")
            return data[:-2]
        if kind == b"*":
            count = int(rest)
            if count < 0:
                return None
            items: list[Reply] = []
            for _ in range(count):
                item = self._read()
                if isinstance(item, RespError):
                    raise item
                items.append(item)
            return items
        raise ConnectionError(f"not a RESP2 reply: {line[:20]!r}")

    def close(self) -> None:
        try:
            self.file.close()
        finally:
            self.sock.close()
