"""``sluice serve``: the webhook endpoint (``POST /webhooks/{source}``, ``GET /healthz``).

    app.py        the Starlette app: size limit, signature, JSON, events, redelivery claim
    publish.py    the coalescer: events of one source and kind in a burst -> one message
    deliveries.py Redis: delivery ids claimed once, and the counters of what was answered
"""
