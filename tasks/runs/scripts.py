"""The Lua scripts Sluice runs in Redis, one file each under ``lua/``.

Each file opens with a header that names every KEYS and ARGV slot, then gives them names as
locals. A line ``--! include run_lib`` puts ``lua/run_lib.lua`` (shared functions) before the
script. Scripts are read once per process and registered per client (redis-py sends EVALSHA).
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

import redis
from redis.commands.core import Script

_INCLUDE = re.compile(r"^--! include (\w+)$", re.M)


@cache
def source(name: str) -> str:
    """The text of ``lua/{name}.lua`` with its includes put before it."""
    text = resources.files(__package__).joinpath("lua", f"{name}.lua").read_text()
    includes = [source(lib) for lib in _INCLUDE.findall(text)]
    return "\n".join([*includes, text])


def register(client: redis.Redis, name: str) -> Script:
    return client.register_script(source(name))
