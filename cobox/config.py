"""Configuration: defaults < ``<home>/config.toml`` < environment < command-line flags.

The defaults, and the documentation of every setting, are ``config/default.toml``. A value of
another type than its default, an unknown section or key, or a file that is not valid TOML is
refused with a message naming the file and the key; the file is never rewritten by cobox.

Values are checked as well as types, each error one line naming where the value came from and
the key (or the flag): ports 0-65535, settings with a fixed set of values (``log.level``),
peer addresses (``network.listen``, ``--listen``) and ``HOST:PORT`` lists (``dht.bootstrap``),
the ranges of the connection limits (``network.*``), relay servers, ``folders.min_disk_free`` and
``backup.recovery_allow``; settings that depend on each other are checked after all layers.
The control API stays on loopback unless ``api.allow_remote = true`` says otherwise on purpose.
A ``COBOX_*`` variable that names no setting is warned about (with the nearest one), not fatal.

All of that happens once, in :func:`load`, which returns the typed, frozen
:class:`cobox.settings.Config`; the rest of cobox reads its attributes and checks nothing again.
"""

from __future__ import annotations

import copy
import difflib
import importlib.resources
import ipaddress
import logging
import os
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from networker import AddressError, ConnectionLimits, PenaltyPolicy
from networker import parse_address as parse

from .errors import ConfigError
from .settings import Config, NetworkSettings

ENV_PREFIX = "COBOX_"
ENV_OTHER = frozenset({"COBOX_HOME"})  # COBOX_* variables that are not settings
COMMAND_LINE = "command line"
FLAGS = {"network.listen": "--listen", "dht.port": "--dht-port", "dht.host": "--dht-host",
         "dht.bootstrap": "--bootstrap", "api.port": "--api-port"}  # the daemon's flag for a setting
POSITIVE = frozenset({"network.handshake_timeout", "network.idle_timeout", "network.refuse_seconds",
                      "dht.rpc_timeout", "folders.rescan_interval"})  # durations that must be above zero
AT_LEAST_ONE = frozenset({"network.max_connections", "network.max_per_ip", "network.max_pending",
                          "network.max_pending_per_ip"})
SHARES = frozenset({"network.group_reserve"})  # 0 <= share < 1
CHOICES = {"log.level": ("debug", "info", "warning", "error"), "storage.durability": ("normal", "full"),
           "backup.keys_strength": ("interactive", "moderate", "sensitive")}

log = logging.getLogger("cobox.config")


def defaults() -> dict[str, dict[str, Any]]:
    text = (importlib.resources.files("cobox") / "default.toml").read_text()
    return tomllib.loads(text)


def load(home: Path, env: Mapping[str, str] | None = None,
         overrides: Mapping[str, Mapping[str, Any]] | None = None) -> Config:
    """The effective configuration for ``home``, checked: a ``ConfigError`` names the file and key."""
    config = defaults()
    origins: dict[str, str] = {}  # "section.key" -> where its value came from, for cross-key errors
    path = home / "config.toml"
    if path.exists():
        try:
            user = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: not valid TOML: {e}") from None
        merge(config, user, str(path), origins)
    environment = env if env is not None else os.environ
    warn_unknown_env(environment, config)
    merge(config, from_env(environment, config), "environment", origins)
    if overrides:
        merge(config, overrides, COMMAND_LINE, origins)
    validate(config, origins)
    check_api_exposure(config)
    typed = Config.from_mapping(config)
    connection_limits(typed.network)  # ranges the connection limits check themselves
    peer_ids(typed.backup.recovery_allow)
    return typed


def validate(config: Mapping[str, Mapping[str, Any]], origins: Mapping[str, str] | None = None) -> None:
    """Settings whose form a type alone does not check, and those that depend on each other."""
    net = config["network"]
    if net["refuse_max_seconds"] < net["refuse_seconds"]:
        origin = (origins or {}).get("network.refuse_max_seconds") or (origins or {}).get("network.refuse_seconds")
        raise ConfigError(f"{origin or 'defaults'}: network.refuse_max_seconds = {net['refuse_max_seconds']} "
                          f"must not be below network.refuse_seconds = {net['refuse_seconds']}")
    for text in config["relay"]["servers"]:
        try:
            if any(a.relayed or a.peer_key is None or a.transport != "tcp" for a in parse(text).alternatives):
                raise AddressError("a relay is given as tcp:HOST:PORT~noise:KEY")
        except AddressError as e:
            raise ConfigError(f"relay.servers: {text!r}: {e}") from None


def merge(config: dict[str, dict[str, Any]], layer: Mapping[str, Any], origin: str,
          origins: dict[str, str] | None = None) -> None:
    base = defaults()
    for section, values in layer.items():
        if section not in base:
            raise ConfigError(f"{origin}: unknown section [{section}]")
        if not isinstance(values, Mapping):
            raise ConfigError(f"{origin}: [{section}] must be a table")
        for key, value in values.items():
            if key not in base[section]:
                raise ConfigError(f"{origin}: unknown setting {section}.{key}")
            name = f"{section}.{key}"
            config[section][key] = check_value(name, check(name, value, base[section][key], origin), origin)
            if origins is not None:
                origins[name] = origin


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


def check_value(name: str, value: Any, origin: str) -> Any:
    """Values of the right type that still make no sense: refused, naming the key (or flag)."""
    shown = f"{FLAGS[name]} ({name})" if origin == COMMAND_LINE and name in FLAGS else name
    key = name.rpartition(".")[2]
    if (key == "port" or key.endswith("_port")) and isinstance(value, int) and not 0 <= value <= 65535:
        raise ConfigError(f"{origin}: {shown} = {value} is not a port (0-65535; 0 picks a free one)")
    if name in POSITIVE and value <= 0:
        raise ConfigError(f"{origin}: {shown} = {value} must be above 0")
    if name in AT_LEAST_ONE and value < 1:
        raise ConfigError(f"{origin}: {shown} = {value} must be at least 1")
    if name in SHARES and not 0 <= value < 1:
        raise ConfigError(f"{origin}: {shown} = {value} must be a share from 0 up to (not including) 1")
    if name in CHOICES and value not in CHOICES[name]:
        raise ConfigError(f"{origin}: {shown} = {value!r} must be one of {', '.join(CHOICES[name])}")
    if name == "network.listen":
        from networker import AddressError
        from networker import parse_address as parse

        for item in value:
            try:
                parse(item)
            except AddressError as e:
                raise ConfigError(f"{origin}: {shown}: {item!r} is not an address to listen on ({e}); "
                                  "expected tcp:HOST:PORT, e.g. tcp:0.0.0.0:47100, or unix:PATH") from None
    if name == "dht.bootstrap":
        for item in value:
            host, _, port = item.strip().rpartition(":")
            if not host.strip("[]") or not port.isdigit() or not 0 < int(port) <= 65535:
                raise ConfigError(f"{origin}: {shown}: {item!r} is not HOST:PORT (e.g. 203.0.113.5:6881)")
    if name == "folders.min_disk_free":
        from .folders.disk import DiskReserve

        try:
            DiskReserve.parse(value)
        except ConfigError as e:
            raise ConfigError(f"{origin}: {e}") from None
    if name == "backup.recovery_allow":
        try:
            peer_ids(value)
        except ConfigError as e:
            raise ConfigError(f"{origin}: {e}") from None
    if name == "network.device_limits":
        from .bandwidth import from_settings

        try:
            from_settings(NetworkSettings(device_limits=tuple(value)))
        except ConfigError as e:
            raise ConfigError(f"{origin}: {e}") from None
    if name in ("api.host", "dht.host") and not _is_host(value):
        raise ConfigError(f"{origin}: {shown} = {value!r} is not an IP address or host name")
    return value


def check_api_exposure(config: Mapping[str, Mapping[str, Any]]) -> None:
    """The control API holds every key of this device: off loopback only on purpose."""
    api = config["api"]
    if _is_loopback(api["host"]) or api.get("allow_remote", False):
        return
    raise ConfigError(f"api.host = {api['host']!r} would open the control API (full control of this device) "
                      "beyond this machine; keep it on 127.0.0.1, or set api.allow_remote = true "
                      "if that is what you want (see default.toml)")


def warn_unknown_env(env: Mapping[str, str], config: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Warn about each ``COBOX_*`` variable that names no setting (a typo would else be silent)."""
    known = {f"{ENV_PREFIX}{section}_{key}".upper() for section, values in config.items() for key in values}
    unknown = sorted(n for n in env if n.startswith(ENV_PREFIX) and n not in known and n not in ENV_OTHER)
    for name in unknown:
        near = difflib.get_close_matches(name, sorted(known | ENV_OTHER), n=1)
        log.warning("environment: %s is not a cobox setting, ignored%s", name,
                    f" (did you mean {near[0]}?)" if near else "")
    return unknown


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _is_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return bool(host) and all(part and part.replace("-", "").isalnum() for part in host.split("."))


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


def peer_ids(given: Iterable[str]) -> set[bytes]:
    """``[backup] recovery_allow``: peer ids (64 hex digits) that may register key backups."""
    texts = list(given)
    try:
        ids = {bytes.fromhex(t) for t in texts}
    except ValueError:
        ids = set()
    if any(len(i) != 32 for i in ids) or len(ids) != len(set(texts)):
        raise ConfigError("backup.recovery_allow must list peer ids of 64 hex digits")
    return ids


def connection_limits(net: NetworkSettings) -> dict[str, Any]:
    """``Node``'s ``limits`` and ``penalties`` from the ``[network]`` settings."""
    try:
        return {
            "limits": ConnectionLimits(
                max_connections=net.max_connections, group_reserve=net.group_reserve,
                max_per_ip=net.max_per_ip, idle_timeout=net.idle_timeout,
                max_pending=net.max_pending, max_pending_per_ip=net.max_pending_per_ip),
            "penalties": PenaltyPolicy(base=net.refuse_seconds, cap=net.refuse_max_seconds),
        }
    except ValueError as e:
        raise ConfigError(f"[network]: {e}") from None
