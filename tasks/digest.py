"""The digest of a sluice.toml: a run records the one it was started from, and a worker starts
a run only from the same file (``sluice run``'s start request, tasks/operator/thin.py).

Standard library only: ``sluice run`` computes it before importing the configuration's models.
"""

from __future__ import annotations

import hashlib
import os


def config_digest(text: str) -> str:
    """The first 16 hex digits of the SHA-256 of the file's text (read as ``Path.read_text``
    reads it: UTF-8, newlines made ``\\n``)."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_digest(path: str | os.PathLike[str]) -> str:
    """``config_digest`` of the file. Raises OSError, UnicodeDecodeError."""
    with open(path, encoding="utf-8") as f:  # as Path.read_text reads it
        return config_digest(f.read())
