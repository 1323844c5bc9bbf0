from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from cobox import config
from cobox.errors import ConfigError
from cobox.settings import Config, NetworkSettings


def test_precedence_defaults_file_env_flags(tmp_path):
    assert config.load(tmp_path, env={}).api.port == 0
    (tmp_path / "config.toml").write_text("[api]\nport = 8000\n[dht]\nbootstrap = ['a:1']\n")
    assert config.load(tmp_path, env={}).api.port == 8000
    cfg = config.load(tmp_path, env={"COBOX_API_PORT": "9000", "COBOX_DHT_BOOTSTRAP": "b:2, c:3",
                                     "COBOX_LAN_ENABLED": "false"})
    assert cfg.api.port == 9000 and cfg.dht.bootstrap == ("b:2", "c:3")
    assert cfg.lan.enabled is False
    cfg = config.load(tmp_path, env={"COBOX_API_PORT": "9000"}, overrides={"api": {"port": 9100}})
    assert cfg.api.port == 9100
    assert cfg.swarm.reconnect_max == 300.0  # untouched defaults stay


@pytest.mark.parametrize("text,needle", [
    ("[api]\nport = 'x'\n", "api.port must be an integer"),
    ("[api]\nbogus = 1\n", "unknown setting api.bogus"),
    ("[nope]\n", "unknown section [nope]"),
    ("[api\n", "not valid TOML"),
    ("[network]\nlisten = [1, 2]\n", "list of strings"),
    ("[swarm]\nlookup_interval = -1\n", "must not be negative"),
])
def test_invalid_files_name_the_key(tmp_path, text, needle):
    (tmp_path / "config.toml").write_text(text)
    with pytest.raises(ConfigError) as e:
        config.load(tmp_path, env={})
    assert needle in str(e.value) and "config.toml" in str(e.value)
    assert (tmp_path / "config.toml").read_text() == text


def test_bad_environment_value(tmp_path):
    with pytest.raises(ConfigError, match="COBOX_API_PORT"):
        config.load(tmp_path, env={"COBOX_API_PORT": "lots"})


def test_every_default_is_documented():
    lines = (config.importlib.resources.files("cobox") / "default.toml").read_text().splitlines()
    section, documented = "", set()
    for k, line in enumerate(lines):
        if line.startswith("["):
            section = line.strip("[]")
        elif "=" in line and not line.startswith("#") and lines[k - 1].startswith("#"):
            documented.add(f"{section}.{line.split('=')[0].strip()}")
    for section, values in config.defaults().items():
        for key in values:
            assert f"{section}.{key}" in documented, f"{section}.{key} has no comment of its own"


@pytest.mark.parametrize("text,needle", [
    ("[dht]\nport = 99999\n", "dht.port = 99999 is not a port"),
    ("[api]\nport = 70000\n", "api.port = 70000 is not a port"),
    ('[log]\nlevel = "verbose"\n', "log.level = 'verbose' must be one of debug, info, warning, error"),
    ('[storage]\ndurability = "sometimes"\n', "storage.durability = 'sometimes' must be one of normal, full"),
    ('[network]\nlisten = ["garbage"]\n', "network.listen: 'garbage' is not an address to listen on"),
    ('[dht]\nbootstrap = ["nohost"]\n', "dht.bootstrap: 'nohost' is not HOST:PORT"),
    ('[api]\nhost = "0.0.0.0"\n', "api.host = '0.0.0.0' would open the control API"),
])
def test_values_that_make_no_sense_are_one_line_naming_the_key(tmp_path, text, needle):
    (tmp_path / "config.toml").write_text(text)
    with pytest.raises(ConfigError) as e:
        config.load(tmp_path, env={})
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_listen_flag_garbage_names_the_flag(tmp_path):
    with pytest.raises(ConfigError) as e:
        config.load(tmp_path, env={}, overrides={"network": {"listen": ["garbage"]}})
    assert str(e.value).startswith("command line: --listen (network.listen): 'garbage'")
    assert "expected tcp:HOST:PORT" in str(e.value)


def test_api_off_loopback_only_with_the_opt_in(tmp_path):
    (tmp_path / "config.toml").write_text('[api]\nhost = "0.0.0.0"\nallow_remote = true\n')
    assert config.load(tmp_path, env={}).api.host == "0.0.0.0"
    with pytest.raises(ConfigError, match=r"api\.allow_remote = true"):
        config.load(tmp_path, env={"COBOX_API_ALLOW_REMOTE": "false"})
    (tmp_path / "config.toml").write_text('[api]\nhost = "::1"\n')
    assert config.load(tmp_path, env={}).api.host == "::1"


def test_unknown_cobox_variables_are_warned_about(tmp_path, caplog):
    with caplog.at_level("WARNING", logger="cobox.config"):
        cfg = config.load(tmp_path, env={"COBOX_API_PROT": "9000", "COBOX_HOME": "/x", "COBOXY": "1"})
    assert cfg.api.port == 0
    warned = [r.getMessage() for r in caplog.records]
    assert warned == ["environment: COBOX_API_PROT is not a cobox setting, ignored (did you mean COBOX_API_PORT?)"]


def test_the_dataclasses_and_default_toml_agree():
    """Same sections, same keys in the same order, same defaults and types (lists are tuples)."""
    toml = config.defaults()
    typed = Config()
    assert [f.name for f in dataclasses.fields(typed)] == list(toml)
    for section, values in toml.items():
        got = getattr(typed, section)
        assert [f.name for f in dataclasses.fields(got)] == list(values), section
        for key, default in values.items():
            value = getattr(got, key)
            expected = tuple(default) if isinstance(default, list) else default
            assert value == expected and type(value) is type(expected), f"{section}.{key}: {value!r} != {expected!r}"
    assert typed.to_mapping() == toml
    assert config.load(Path("/nonexistent"), env={}) == typed


def test_load_returns_a_frozen_typed_config(tmp_path):
    (tmp_path / "config.toml").write_text("[network]\nlisten = ['tcp:127.0.0.1:0']\nmax_connections = 9\n"
                                          "[swarm]\ndial_rate = 2\n")
    cfg = config.load(tmp_path, env={"COBOX_RELAY_USE": "false"})
    assert isinstance(cfg, Config) and isinstance(cfg.network, NetworkSettings)
    assert cfg.network.listen == ("tcp:127.0.0.1:0",) and cfg.network.max_connections == 9
    assert cfg.swarm.dial_rate == 2.0 and type(cfg.swarm.dial_rate) is float  # an integer is a number too
    assert cfg.relay.use is False and cfg.relay.enabled == "auto"
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.network.max_connections = 1  # type: ignore[misc]
    changed = cfg.replace("api", port=1234)
    assert changed.api.port == 1234 and cfg.api.port == 0 and changed.network is cfg.network


@pytest.mark.parametrize("text,needle", [
    ("[network]\ngroup_reserve = 1.5\n", "network.group_reserve = 1.5 must be a share"),
    ("[network]\nmax_pending = 0\n", "network.max_pending = 0 must be at least 1"),
    ("[network]\nidle_timeout = 0\n", "network.idle_timeout = 0.0 must be above 0"),
    ("[network]\nrefuse_max_seconds = 5\n", "config.toml: network.refuse_max_seconds = 5.0 must not be below"),
    ("[backup]\nrecovery_allow = ['abcd']\n", "backup.recovery_allow"),
    ('[folders]\nmin_disk_free = "lots"\n', "lots"),
])
def test_settings_checked_by_their_users_are_refused_at_load(tmp_path, text, needle):
    (tmp_path / "config.toml").write_text(text)
    with pytest.raises(ConfigError) as e:
        config.load(tmp_path, env={})
    assert needle in str(e.value) and "config.toml" in str(e.value) and "\n" not in str(e.value)
