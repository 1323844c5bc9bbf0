from __future__ import annotations

import pytest

from cobox import config
from cobox.errors import ConfigError


def test_precedence_defaults_file_env_flags(tmp_path):
    assert config.load(tmp_path, env={})["api"]["port"] == 0
    (tmp_path / "config.toml").write_text("[api]\nport = 8000\n[dht]\nbootstrap = ['a:1']\n")
    assert config.load(tmp_path, env={})["api"]["port"] == 8000
    cfg = config.load(tmp_path, env={"COBOX_API_PORT": "9000", "COBOX_DHT_BOOTSTRAP": "b:2, c:3",
                                     "COBOX_LAN_ENABLED": "false"})
    assert cfg["api"]["port"] == 9000 and cfg["dht"]["bootstrap"] == ["b:2", "c:3"]
    assert cfg["lan"]["enabled"] is False
    cfg = config.load(tmp_path, env={"COBOX_API_PORT": "9000"}, overrides={"api": {"port": 9100}})
    assert cfg["api"]["port"] == 9100
    assert cfg["swarm"]["reconnect_max"] == 300.0  # untouched defaults stay


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
