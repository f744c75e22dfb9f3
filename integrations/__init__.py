"""What talks to third-party APIs. Never imports celery or redis: see ``base.Integration``."""

from integrations.lean import skip_httpx_cli

skip_httpx_cli()
