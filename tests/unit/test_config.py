from __future__ import annotations

from pathlib import Path

import pytest

from integrations.errors import ConfigError
from integrations.rest.settings import CursorPagination, RestSettings
from tasks.config import HttpConfig, SqliteConfig, load_config

ISSUE_EXAMPLE = """
[target]
type = "http"
url = "http://127.0.0.1:8900/sink/{kind}"

[sources.tracker]
integration = "rest"
base_url = "http://127.0.0.1:8900"
headers = { Authorization = "Bearer ${TRACKER_TOKEN}" }

[sources.tracker.kinds.issue]
path = "/cursor/issue"
items = "data"
id = "id"
[sources.tracker.kinds.issue.paginator]
type = "cursor"
cursor_path = "next_cursor"
cursor_param = "cursor"
limit_param = "limit"
limit = 100
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sluice.toml"
    path.write_text(text)
    return path


def test_the_documented_shape_loads_and_expands_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("TRACKER_TOKEN", "s3cret")
    config = load_config(write(tmp_path, ISSUE_EXAMPLE))
    assert isinstance(config.target, HttpConfig)
    source = config.source("tracker")
    assert isinstance(source, RestSettings)
    assert source.headers == {"Authorization": "Bearer s3cret"}
    kind = source.kinds["issue"]
    assert isinstance(kind.paginator, CursorPagination) and kind.paginator.limit == 100
    assert source.max_in_flight == 32 and source.delete_threshold == 0.2


def test_target_defaults_to_sqlite_beside_the_config(tmp_path, monkeypatch):
    monkeypatch.setenv("TRACKER_TOKEN", "x")
    text = ISSUE_EXAMPLE.split("[sources.tracker]", 1)[1]
    config = load_config(write(tmp_path, "[sources.tracker]" + text))
    assert config.target == SqliteConfig(path=str(tmp_path.resolve() / "sluice.db"))


@pytest.mark.parametrize("old,new,expected", [
    ('path = "/cursor/issue"', 'pth = "/cursor/issue"',
     ["sources.tracker.kinds.issue.pth: unknown key",
      "sources.tracker.kinds.issue.path: Field required"]),
    ("limit = 100\n", 'limit = "many"\n',
     ["sources.tracker.kinds.issue.paginator.limit: Input should be a valid integer"]),
    ('type = "cursor"', 'type = "curser"',
     ["sources.tracker.kinds.issue.paginator: Input tag 'curser' found using 'type' does not"]),
    ('integration = "rest"', 'integration = "soap"',
     ["sources.tracker.integration: 'soap' is not one of: github, jira, rest"]),
    ('url = "http', 'ulr = "http', ["target.ulr: unknown key", "target.url: Field required"]),
    ("[target]", "[targets]", ["targets: unknown key"]),
    ("${TRACKER_TOKEN}", "${NOT_SET_ANYWHERE}",
     ["sources.tracker.headers.Authorization: environment variable NOT_SET_ANYWHERE is not set"]),
])
def test_errors_name_the_file_and_the_key_path(tmp_path, monkeypatch, old, new, expected):
    monkeypatch.setenv("TRACKER_TOKEN", "x")
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    path = write(tmp_path, ISSUE_EXAMPLE.replace(old, new))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert message.startswith(f"{path}: invalid configuration")
    for line in expected:
        assert line in message


def test_not_toml_and_missing_file_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[target\n"))
    with pytest.raises(ConfigError, match="cannot read the configuration"):
        load_config(tmp_path / "absent.toml")


def test_unknown_source_names_the_known_ones(tmp_path, monkeypatch):
    monkeypatch.setenv("TRACKER_TOKEN", "x")
    config = load_config(write(tmp_path, ISSUE_EXAMPLE))
    with pytest.raises(ConfigError, match="no source 'jira' \\(sources: tracker\\)"):
        config.source("jira")


def test_a_postgres_target_without_psycopg_is_a_config_error(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "psycopg" else real(name, *a))
    text = ISSUE_EXAMPLE.replace('type = "http"\nurl = "http://127.0.0.1:8900/sink/{kind}"',
                                 'type = "postgres"\ndsn = "postgresql://db/x"')
    monkeypatch.setenv("TRACKER_TOKEN", "t")
    with pytest.raises(ConfigError, match=r"target.type: the postgres target needs psycopg.*"
                                          r"pip install -e '\.\[postgres\]'"):
        load_config(write(tmp_path, text))


def test_every_env_value_is_a_secret_and_the_digest_follows_the_text(tmp_path, monkeypatch):
    monkeypatch.setenv("TRACKER_TOKEN", "s3cret-token")
    first = load_config(write(tmp_path, ISSUE_EXAMPLE))
    assert first.secrets == {"s3cret-token"}
    assert first.redactor.text("Bearer s3cret-token") == "Bearer ***"
    again = load_config(write(tmp_path, ISSUE_EXAMPLE + "\n# a comment\n"))
    assert len(first.digest) == 16 and again.digest != first.digest


def test_config_is_accepted_after_the_subcommand(tmp_path, monkeypatch, capsys):
    from tasks.operator.cli import main

    monkeypatch.setenv("TRACKER_TOKEN", "t")
    path = write(tmp_path, ISSUE_EXAMPLE)
    assert main(["check", "--config", str(path)]) == 0
    assert main(["--config", str(path), "check"]) == 0
    assert capsys.readouterr().out.count(f"{path}: ok") == 2


def test_a_config_that_is_not_utf8_is_a_config_error(tmp_path):
    path = tmp_path / "sluice.toml"
    path.write_bytes(b'[sources.a]\nintegration = "rest"\n# caf\xe9\n')
    with pytest.raises(ConfigError, match=r"sluice.toml: not UTF-8 text \(byte 38: invalid"):
        load_config(path)
