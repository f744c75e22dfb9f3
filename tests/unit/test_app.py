"""The Celery app's settings and the Flower guard (pure; the integration tests run workers)."""

from __future__ import annotations

import pytest

from tasks.app import app, flower_refusal


def test_json_only_acks_late_and_redelivery_settings():
    conf = app.conf
    assert conf.accept_content == ["json"] and conf.task_serializer == "json"
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert conf.broker_transport_options["visibility_timeout"] == 600
    assert conf.worker_send_task_events and conf.task_ignore_result
    # a plain `celery -A tasks worker`: the threads pool, 8 at once
    assert (conf.worker_pool, conf.worker_concurrency) == ("threads", 8)


def test_the_flower_command_in_the_readme_starts():
    from pathlib import Path

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    line = next(x for x in readme.splitlines() if x.startswith("celery -A tasks flower"))
    argv = line.split("#")[0].split()
    assert flower_refusal(argv, {}) is None, line


@pytest.mark.parametrize("argv,env,refused", [
    (["celery", "flower"], {}, True),                                  # every interface
    (["celery", "flower", "--address=0.0.0.0"], {}, True),
    (["celery", "flower", "--address=127.0.0.1"], {}, False),
    (["celery", "flower"], {"FLOWER_ADDRESS": "localhost"}, False),
    (["celery", "flower", "--address=0.0.0.0", "--basic-auth=a:b"], {}, False),
    (["celery", "flower"], {"FLOWER_BASIC_AUTH": "a:b"}, False),
    (["celery", "flower"], {"FLOWER_AUTH": ".*@example.com"}, False),
])
def test_flower_never_listens_beyond_loopback_without_auth(argv, env, refused):
    assert (flower_refusal(argv, env) is not None) is refused
