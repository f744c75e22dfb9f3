"""The Celery side of Sluice: ``celery -A tasks worker`` finds ``tasks.app``."""

from tasks.app import app

__all__ = ["app"]
