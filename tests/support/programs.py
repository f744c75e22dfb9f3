"""Programs some tests need besides Python (Chromium, Node.js, openssl, a TLS redis-server).

On a machine without one, such a test is skipped and says why; in CI (``SLUICE_CI`` set, as
``.ci/run`` does after installing them all) a missing one fails the test instead.
"""

from __future__ import annotations

import os
import shutil

import pytest


def in_ci() -> bool:
    return bool(os.environ.get("SLUICE_CI"))


def missing(why: str) -> None:
    """Skip the test because ``why`` (outside CI); fail it in CI. Never returns."""
    if in_ci():
        pytest.fail(f"{why} (.ci/run installs it)", pytrace=False)
    pytest.skip(f"{why} (.ci/run installs it; CI fails without it)")


def program(*names: str, purpose: str) -> str:
    """The path of the first of ``names`` on PATH; if none is there, ``missing``."""
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    missing(f"{' or '.join(names)} is not on PATH: {purpose}")
    raise AssertionError("unreachable")  # pytest.skip and pytest.fail raise
