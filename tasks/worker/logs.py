"""Logs never show a secret: every record that reaches a handler of the worker's loggers is
passed through the configuration's ``Redactor`` (httpx's request lines carry query strings, an
exception may carry a URL)."""

from __future__ import annotations

import logging

from integrations.secrets import Redactor


class RedactingFilter(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.redactor = Redactor()

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.redactor:
            return True
        message = record.getMessage()
        clean = self.redactor.text(message)
        if clean != message:
            record.msg, record.args = clean, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = self.redactor.text(
                logging.Formatter().formatException(record.exc_info))
        return True


FILTER = RedactingFilter()


def install(redactor: Redactor) -> None:
    """Redact with ``redactor`` on every handler of the root and Celery task loggers."""
    FILTER.redactor = redactor
    for name in ("", "celery.task", "celery"):
        for handler in logging.getLogger(name).handlers:
            if FILTER not in handler.filters:
                handler.addFilter(FILTER)
