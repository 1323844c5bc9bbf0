"""The typed configuration: one frozen dataclass per section of ``config/default.toml``.

``cobox.config.load`` merges the layers (defaults < file < environment < flags), checks every
value once (types, ranges, allowed values, forms) and then builds a :class:`Config` from the
result with :func:`Config.from_mapping`. Everything after that reads attributes
(``config.network.max_connections``); nothing re-validates at use.

The field defaults here are the documented defaults of ``config/default.toml``; a test keeps the
two in agreement (same sections, same keys, same types and values). Lists of the TOML file are
tuples here, so a ``Config`` is immutable all the way down; ``Config.replace(section, **values)``
makes a changed copy. A three-way setting (``relay.enabled``, ``relay.use``) is ``"auto"``,
``True`` or ``False``.

This module is pure: no I/O, no imports from the rest of cobox.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Auto = Literal["auto"] | bool


@dataclass(frozen=True, slots=True)
class StorageSettings:
    durability: str = "normal"


@dataclass(frozen=True, slots=True)
class NetworkSettings:
    listen: tuple[str, ...] = ("tcp:[::]:47100",)
    handshake_timeout: float = 10.0
    max_connections: int = 64
    group_reserve: float = 0.25
    max_per_ip: int = 8
    idle_timeout: float = 10.0
    max_pending: int = 64
    max_pending_per_ip: int = 8
    refuse_seconds: float = 10.0
    refuse_max_seconds: float = 600.0
    max_send_kbps: int = 0
    max_recv_kbps: int = 0
    limit_lan: bool = False
    device_limits: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RelaySettings:
    enabled: Auto = "auto"
    listen: str = "tcp:[::]:47101"
    max_circuits: int = 32
    max_reservations: int = 128
    circuit_kbps: int = 4096
    total_kbps: int = 16384
    use: Auto = "auto"
    servers: tuple[str, ...] = ()
    reservations: int = 2
    hole_punch: bool = True
    lookup_interval: float = 30.0


@dataclass(frozen=True, slots=True)
class DhtSettings:
    enabled: bool = True
    host: str = "0.0.0.0"
    port: int = 47100
    bootstrap: tuple[str, ...] = ()
    rpc_timeout: float = 1.0
    record_ttl: int = 1800
    allow_loopback: bool = False


@dataclass(frozen=True, slots=True)
class PortmapSettings:
    enabled: bool = True
    gateway: str = ""


@dataclass(frozen=True, slots=True)
class LanSettings:
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class SwarmSettings:
    lookup_interval: float = 60.0
    reconnect_base: float = 1.0
    reconnect_max: float = 300.0
    give_up_after: int = 8
    dial_rate: float = 4.0
    dial_burst: int = 8


@dataclass(frozen=True, slots=True)
class BackupSettings:
    quota_mb: float = 0.0
    audit_interval: float = 3600.0
    recovery_server: bool = True
    recovery_allow: tuple[str, ...] = ()
    keys_strength: str = "moderate"
    max_feeds: int = 4096
    history_days: float = 0.0

    @property
    def quota_bytes(self) -> int:
        return int(self.quota_mb * 1024 * 1024)


@dataclass(frozen=True, slots=True)
class HostingSettings:
    enabled: bool = True
    invite_quota_mb: float = 1024.0
    invite_groups: int = 4
    invite_expires_days: float = 7.0
    group_quota_mb: float = 0.0
    max_groups: int = 0
    revoke_grace_days: float = 7.0


@dataclass(frozen=True, slots=True)
class GroupsSettings:
    max_feeds_per_device: int = 64


@dataclass(frozen=True, slots=True)
class FoldersSettings:
    min_disk_free: str = "1%"
    rescan_interval: float = 30.0
    stable_wait: float = 1.0
    history_days: float = 30.0
    single_copy: bool = True


@dataclass(frozen=True, slots=True)
class ApiSettings:
    host: str = "127.0.0.1"
    port: int = 0
    allow_remote: bool = False


@dataclass(frozen=True, slots=True)
class LogSettings:
    level: str = "info"


@dataclass(frozen=True, slots=True)
class DeviceSettings:
    name: str = ""


@dataclass(frozen=True, slots=True)
class Config:
    """The effective configuration of one home: a section per attribute, as in default.toml."""

    storage: StorageSettings = field(default_factory=StorageSettings)
    network: NetworkSettings = field(default_factory=NetworkSettings)
    relay: RelaySettings = field(default_factory=RelaySettings)
    dht: DhtSettings = field(default_factory=DhtSettings)
    portmap: PortmapSettings = field(default_factory=PortmapSettings)
    lan: LanSettings = field(default_factory=LanSettings)
    swarm: SwarmSettings = field(default_factory=SwarmSettings)
    backup: BackupSettings = field(default_factory=BackupSettings)
    hosting: HostingSettings = field(default_factory=HostingSettings)
    groups: GroupsSettings = field(default_factory=GroupsSettings)
    folders: FoldersSettings = field(default_factory=FoldersSettings)
    api: ApiSettings = field(default_factory=ApiSettings)
    log: LogSettings = field(default_factory=LogSettings)
    device: DeviceSettings = field(default_factory=DeviceSettings)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Mapping[str, Any]]) -> Config:
        """A ``Config`` from already checked ``{section: {key: value}}`` (lists become tuples).

        Missing sections or keys keep their defaults; an unknown one is a ``TypeError`` (the
        loader refuses those before, naming the file)."""
        sections: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            kind = section_types()[f.name]
            given = values.get(f.name, {})
            sections[f.name] = kind(**{k: tuple(v) if isinstance(v, list) else v for k, v in given.items()})
        return cls(**sections)

    def to_mapping(self) -> dict[str, dict[str, Any]]:
        """``{section: {key: value}}`` with lists, as the TOML file has them."""
        return {f.name: {k: list(v) if isinstance(v, tuple) else v
                         for k, v in dataclasses.asdict(getattr(self, f.name)).items()}
                for f in dataclasses.fields(self)}

    def replace(self, section: str, **values: Any) -> Config:
        """A copy with some settings of one section changed (as given, not re-checked)."""
        changed = dataclasses.replace(getattr(self, section), **values)
        return dataclasses.replace(self, **{section: changed})


def section_types() -> dict[str, type[Any]]:
    """The dataclass of each section, by section name."""
    return {"storage": StorageSettings, "network": NetworkSettings, "relay": RelaySettings, "dht": DhtSettings,
            "portmap": PortmapSettings, "lan": LanSettings, "swarm": SwarmSettings, "backup": BackupSettings,
            "hosting": HostingSettings, "groups": GroupsSettings, "folders": FoldersSettings, "api": ApiSettings,
            "log": LogSettings, "device": DeviceSettings}
