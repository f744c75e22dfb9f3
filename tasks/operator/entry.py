"""The ``sluice`` command's entry point (``[project.scripts]`` in pyproject.toml).

Python's cyclic garbage collector is off while the command starts: importing the CLI (redis,
pydantic, click) and then the integrations and Celery makes ~135,000 objects, none of them
garbage, and the collector ran over that growing heap again and again, about 0.1 s of CPU
before ``sluice run`` sent its producer task (on a 2-core machine shared with the workers,
time to the first item). It is turned back on as it was, so long commands (``run --wait``,
``serve``, ``metrics``, ``standalone``) collect as usual.

``sluice run`` asks the running workers to start its runs before it imports any of that
(``tasks.operator.thin``: standard library only); it takes the click CLI when it cannot.
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def collector_off() -> Iterator[None]:
    """The garbage collector off meanwhile, then as it was."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def main(argv: list[str] | None = None) -> int:
    """``sluice run``'s thin start when it can, else ``tasks.operator.cli.main``, imported
    with the collector off."""
    from tasks.operator import thin

    args = thin.parse(sys.argv[1:] if argv is None else argv)
    if args is not None:
        code = thin.main(args, os.environ)
        if code is not None:
            return code
    with collector_off():
        from tasks.operator import cli
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main())
