"""What talks to third-party APIs. Never imports celery or redis: see ``base.Integration``."""
