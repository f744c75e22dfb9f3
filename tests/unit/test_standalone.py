"""Which sluice.toml `sluice standalone` runs: --config, else $SLUICE_CONFIG, else
./sluice.toml, else the demo (and it says so)."""

from __future__ import annotations

from pathlib import Path

from tasks.operator.standalone import find_config


def test_config_then_the_environment_then_the_working_directory_then_the_demo(tmp_path: Path):
    here = tmp_path / "sluice.toml"
    env = {"SLUICE_CONFIG": "/etc/sluice/sluice.toml"}
    assert find_config(None, env={}, cwd=tmp_path)[0] is None
    assert "running the demo" in find_config(None, env={}, cwd=tmp_path)[1]
    here.write_text("")
    assert find_config(None, env={}, cwd=tmp_path) == (here, "./sluice.toml")
    assert find_config(None, env=env, cwd=tmp_path) == (
        Path("/etc/sluice/sluice.toml"), "$SLUICE_CONFIG")
    assert find_config("other.toml", env=env, cwd=tmp_path) == (Path("other.toml"), "--config")


def test_a_named_file_that_is_missing_is_not_passed_over_for_the_demo(tmp_path: Path):
    # Loading it then fails naming it, rather than syncing the demo instead of the user's API.
    assert find_config(None, env={"SLUICE_CONFIG": str(tmp_path / "gone.toml")},
                       cwd=tmp_path) == (tmp_path / "gone.toml", "$SLUICE_CONFIG")
