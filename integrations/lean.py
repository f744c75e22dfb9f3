"""httpx without its command-line client.

``import httpx`` imports ``httpx._main``, its own CLI (``httpx URL``), whenever click, rich and
pygments are installed, and Sluice installs all three (click for Celery and ``sluice``, rich for
``sluice``'s progress bars). That is about 70 modules, 5 MB of every worker process's memory and
~50 ms of every ``sluice`` command's start, for a command no Sluice process runs. A module
registered as ``httpx._main`` before httpx is first imported stands in for it; its ``main``
says how to reach the real one (the ``httpx`` command, a process of its own, is untouched).
"""

from __future__ import annotations

import sys
import types


def _main() -> None:
    raise SystemExit("httpx's command line is not loaded in Sluice's processes: "
                     "use the `httpx` command instead")


def skip_httpx_cli() -> None:
    """Register the stand-in, unless httpx (or its CLI) is imported already."""
    if "httpx" in sys.modules or "httpx._main" in sys.modules:
        return
    stub = types.ModuleType("httpx._main", "Sluice's stand-in: see integrations/lean.py")
    stub.main = _main  # type: ignore[attr-defined]
    sys.modules["httpx._main"] = stub
