"""The user configuration: file location, typed settings, the config command."""

from __future__ import annotations

import stat
import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from astra_lake.cli import app
from astra_lake.config import KEYS, Config, config_path
from astra_lake.errors import ConfigError

runner = CliRunner()


@pytest.fixture()
def cfg_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "conf" / "config.toml"
    monkeypatch.setenv("ASTRA_LAKE_CONFIG", str(path))
    return path


def test_file_lives_in_xdg_config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ASTRA_LAKE_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert config_path() == tmp_path / "xdg" / "astra-lake" / "config.toml"


def test_set_get_show_unset_through_the_cli(cfg_file: Path) -> None:
    assert runner.invoke(app, ["config", "get", "ingest.workers"]).output == "1\n"  # no file yet: the default
    assert runner.invoke(app, ["config", "set", "ingest.workers", "4"]).exit_code == 0
    assert runner.invoke(app, ["config", "set", "lake", "/data/lake"]).exit_code == 0
    assert tomllib.loads(cfg_file.read_text()) == {"lake": "/data/lake", "ingest": {"workers": 4}}
    assert stat.S_IMODE(cfg_file.stat().st_mode) == 0o600  # it may hold a DSN with a password
    assert runner.invoke(app, ["config", "get", "ingest.workers"]).output == "4\n"
    shown = runner.invoke(app, ["config", "show"]).output.splitlines()
    assert shown[0] == f"# {cfg_file}" and len(shown) == 1 + len(KEYS)
    assert "ingest.workers = 4  # set: Reader processes for `astra-lake ingest`" in shown
    assert 'lake = "/data/lake"  # set: ' in shown[1] and shown[6].startswith("query.threads = 0  # default: ")
    assert tomllib.loads("\n".join(shown))["ingest"]["workers"] == 4  # the listing is itself TOML
    assert runner.invoke(app, ["config", "unset", "ingest.workers"]).exit_code == 0
    assert tomllib.loads(cfg_file.read_text()) == {"lake": "/data/lake"}


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("ingest.workers", "many", "ingest.workers: expected an integer, got 'many'"),
        ("ingest.workers", "-2", "ingest.workers must be >= 0, got -2"),
        ("ingest.wrokers", "2", "unknown setting 'ingest.wrokers'; settings: lake, ingest.workers"),
    ],
)
def test_bad_settings_are_refused_in_one_line(cfg_file: Path, key: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        Config.load().set(key, value)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not cfg_file.exists()


def test_bad_files_name_the_file_and_the_setting(cfg_file: Path) -> None:
    cfg_file.parent.mkdir(parents=True)
    cfg_file.write_text("[ingest]\nworkers = 'two'\n")
    with pytest.raises(ConfigError, match=rf"^{cfg_file}: ingest.workers must be int, got str 'two'$"):
        Config.load()
    cfg_file.write_text("lake = \n")
    with pytest.raises(ConfigError, match=rf"^{cfg_file}: not valid TOML"):
        Config.load()


INT_KEYS = [k for k, v in KEYS.items() if v.type is int]
STR_KEYS = [k for k, v in KEYS.items() if v.type is str]


@settings(max_examples=30, deadline=None)
@given(
    ints=st.dictionaries(st.sampled_from(INT_KEYS), st.integers(0, 2**62)),
    strs=st.dictionaries(st.sampled_from(STR_KEYS), st.text(st.characters(blacklist_categories=["Cs"]), max_size=40)),
)
def test_settings_round_trip_through_the_file(tmp_path_factory: pytest.TempPathFactory, ints: dict, strs: dict) -> None:
    path = tmp_path_factory.mktemp("cfg") / "config.toml"
    cfg = Config()
    for k, v in {**ints, **strs}.items():
        cfg = cfg.set(k, str(v))
    cfg.save(path)
    back = Config.load(path)
    for k, key in KEYS.items():
        assert back.get(k) == {**ints, **strs}.get(k, key.default)
