"""Configuration: defaults < ``<home>/config.toml`` < environment < command-line flags.

The defaults, and the documentation of every setting, are ``config/default.toml``. A value of
another type than its default, an unknown section or key, or a file that is not valid TOML is
refused with a message naming the file and the key; the file is never rewritten by cobox.
"""

from __future__ import annotations

import copy
import importlib.resources
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from networker.address import parse
from networker.errors import AddressError

from .errors import ConfigError

ENV_PREFIX = "COBOX_"


def defaults() -> dict[str, dict[str, Any]]:
    text = (importlib.resources.files("cobox") / "default.toml").read_text()
    return tomllib.loads(text)


def load(home: Path, env: Mapping[str, str] | None = None,
         overrides: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """The effective configuration for ``home``."""
    config = defaults()
    path = home / "config.toml"
    if path.exists():
        try:
            user = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: not valid TOML: {e}") from None
        merge(config, user, str(path))
    merge(config, from_env(env if env is not None else os.environ, config), "environment")
    if overrides:
        merge(config, overrides, "command line")
    validate(config)
    return config


def validate(config: Mapping[str, Mapping[str, Any]]) -> None:
    """Settings whose form a type alone does not check."""
    from .folders.disk import DiskReserve

    DiskReserve.parse(config["folders"]["min_disk_free"])
    for text in config["relay"]["servers"]:
        try:
            if any(a.relayed or a.peer_key is None or a.transport != "tcp" for a in parse(text).alternatives):
                raise AddressError("a relay is given as tcp:HOST:PORT~noise:KEY")
        except AddressError as e:
            raise ConfigError(f"relay.servers: {text!r}: {e}") from None


def merge(config: dict[str, dict[str, Any]], layer: Mapping[str, Any], origin: str) -> None:
    base = defaults()
    for section, values in layer.items():
        if section not in base:
            raise ConfigError(f"{origin}: unknown section [{section}]")
        if not isinstance(values, Mapping):
            raise ConfigError(f"{origin}: [{section}] must be a table")
        for key, value in values.items():
            if key not in base[section]:
                raise ConfigError(f"{origin}: unknown setting {section}.{key}")
            config[section][key] = check(f"{section}.{key}", value, base[section][key], origin)


def check(name: str, value: Any, default: Any, origin: str) -> Any:
    if default == "auto":  # a three-way setting: "auto", true or false
        if type(value) is bool or value == "auto":
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):  # from the environment
            return value.lower() == "true"
        raise ConfigError(f"{origin}: {name} must be \"auto\", true or false, not {value!r}")
    expected = type(default)
    if expected is float and type(value) is int:
        value = float(value)
    if type(value) is not expected:
        raise ConfigError(
            f"{origin}: {name} must be {_kind(default)}, not {_kind(value)} ({value!r})"
        )
    if expected is list and not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{origin}: {name} must be a list of strings")
    if expected in (int, float) and value < 0:
        raise ConfigError(f"{origin}: {name} must not be negative")
    return copy.deepcopy(value)


def from_env(env: Mapping[str, str], config: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    layer: dict[str, dict[str, Any]] = {}
    for section, values in config.items():
        for key, default in values.items():
            name = f"{ENV_PREFIX}{section}_{key}".upper()
            if name not in env:
                continue
            raw = env[name]
            try:
                value: Any
                if isinstance(default, bool):
                    if raw.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                        raise ValueError
                    value = raw.lower() in ("1", "true", "yes", "on")
                elif isinstance(default, int):
                    value = int(raw)
                elif isinstance(default, float):
                    value = float(raw)
                elif isinstance(default, list):
                    value = [v.strip() for v in raw.split(",") if v.strip()]
                else:
                    value = raw
            except ValueError:
                raise ConfigError(f"environment: {name} must be {_kind(default)}, not {raw!r}") from None
            layer.setdefault(section, {})[key] = value
    return layer


def _kind(value: Any) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "text",
            list: "a list"}.get(type(value), type(value).__name__)
