"""The ``sluice serve`` process: sluice.toml loaded once, logs redacted, Redis for the
delivery claims, the Celery app to publish with, and uvicorn running the app.

    serve(config=None, host="127.0.0.1", port=8000)   # returns when uvicorn stops (SIGTERM)
"""

from __future__ import annotations

import logging

from integrations import secrets
from integrations.secrets import Redactor
from tasks.config import SluiceConfig, get_config
from tasks.serve.app import create_app, served_sources
from tasks.serve.deliveries import Deliveries, connect
from tasks.serve.publish import Coalescer
from tasks.settings import get_settings
from tasks.worker import logs

log = logging.getLogger("sluice.serve")


def redactor_of(config: SluiceConfig) -> Redactor:
    """The configuration's secrets, and every webhook secret even when it was written in the
    file rather than taken from the environment."""
    hooks = {s.webhook_secret for s in config.sources.values() if s.webhook_secret}
    return Redactor(config.secrets | hooks)


def celery_send(source: str, kind: str, batch_id: str, events: str, count: int) -> None:
    """Publish one batch with the Celery app (blocking: the coalescer's thread calls it)."""
    from tasks import messages
    from tasks.app import app

    messages.webhook(app, source, kind, batch_id, events, count=count)


def serve(*, config: str | None = None, host: str = "127.0.0.1", port: int = 8000) -> int:
    import uvicorn

    settings = get_settings()
    cfg = get_config(config)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    redactor = redactor_of(cfg)
    logs.install(redactor)  # the root logger's handler: uvicorn's loggers propagate to it
    secrets.install(redactor)
    sources = served_sources(cfg)
    if not sources:
        log.warning("no source has a webhook_secret: every delivery is answered 404")
    log.info("sluice serve on http://%s:%d: POST /webhooks/{%s}", host, port,
             ",".join(sorted(sources)))
    r = connect(settings.redis_url)
    limits = {name: (s.settings.max_batch_items, s.settings.max_batch_bytes)
              for name, s in sources.items()}
    coalescer = Coalescer(celery_send, linger=settings.webhook_linger,
                          limits=lambda source: limits[source])
    app = create_app(sources, Deliveries(r, ttl=settings.webhook_delivery_ttl), coalescer,
                     on_close=r.aclose)
    # log_config=None: uvicorn keeps Python's logging as set up above (redacted).
    uvicorn.run(app, host=host, port=port, log_config=None, access_log=True,
                timeout_graceful_shutdown=10)
    return 0
