"""The status documents of the control API and the dashboard, built from plain values.

Pure: nothing here awaits, reads a clock or touches a daemon. :class:`cobox.app.DaemonApp`
gathers the values (group and folder status, sync progress, peer views from
:mod:`cobox.netview`) and these functions shape them, so a field added to ``status`` (say a
device's reachability or connection kind) lands here and in one gathering place, and the
documents can be tested from literals.

Documents:

* :func:`group_document`: one group, with its sync state, its folder's one-line summary and,
  for members, the backup peers' receipts;
* :func:`sync_document`: how far a group is (``synced`` only with a peer, settled channels,
  nothing missing and no folder download pending);
* :func:`peer_document`: one connected peer; :func:`paused_peer_document`: a paused device (not
  connected while paused: ``kind`` says ``paused``);
* :func:`status_document`: the whole device (``GET /v1/status``);
* :func:`dashboard_document`: the status document plus recent events, each group's connected
  peers and members, the devices panel (:func:`device_documents`), the optional features the
  daemon offers and the version (the dashboard's ``status`` event);
* :func:`metrics_text`: Prometheus text (``GET /metrics``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .netview import PeerInfo, Progress

Doc = dict[str, Any]


@dataclass(frozen=True)
class FolderCounts:
    """What a group's sync state needs of its folder."""

    pending: int
    bytes: int
    pending_bytes: int
    files: int = 0


@dataclass(frozen=True)
class GroupMetrics:
    """One group's figures in ``/metrics``."""

    name: str
    entries: int
    bytes_received: int       # replicated into this group's feeds from peers
    folder_bytes: int         # the size of the group's folder (0 without one)
    records_refused: int      # records of other devices refused (cobox.refusals)
    feeds_refused: int
    audits_passed: int        # backup peers whose latest audit passed
    audits_failed: int


@dataclass(frozen=True)
class Metrics:
    peers: int
    groups: int
    bytes_sent: int
    bytes_received: int
    entries_replicated: int
    protocol_errors: int
    group_entries: tuple[GroupMetrics, ...]
    connection_kinds: tuple[tuple[str, int], ...] = ()  # (kind, connected peers): "direct LAN", "relayed via X"...


def sync_document(group: str, progress: Progress, have: int, folder: FolderCounts | None) -> Doc:
    pending = folder.pending if folder is not None else 0
    doc: Doc = {"group": group, "peers": progress.peers, "have": have, "missing": progress.missing,
                "folder_pending": pending,
                "synced": progress.peers > 0 and progress.settled and progress.missing == 0 and pending == 0}
    if folder is not None:
        doc["folder_bytes"] = folder.bytes
        doc["folder_pending_bytes"] = folder.pending_bytes
        doc["folder_files"] = folder.files
    return doc


def folder_summary(f: Mapping[str, Any]) -> Doc:
    """A folder's line in its group's document."""
    error = f", error: {f['error']}" if f["error"] else ""
    failed = f", {f['failed_count']} paths cannot be applied" if f["failed_count"] else ""
    return {"path": f["path"], "files": f["files"], "bytes": f["bytes"], "pending_down": f["pending_down"],
            "status": f"{f['files']} files, {f['bytes']} bytes, {f['pending_down']} to download"
                                         f"{error}{failed}",
            "error": f["error"], "last_error": f["last_error"], "last_error_time": f["last_error_time"],
            "failed_count": f["failed_count"]}


def receipt_summary(backups: Iterable[Mapping[str, Any]]) -> list[Doc]:
    """Per backup peer: how far it holds every feed (the least of them) and when it last said so."""
    return [{"peer": b["peer"], "peer_name": b.get("peer_name", ""),
             "length": min((x["held"] for x in b["feeds"]), default=0),
             "time": max((x["confirmed"] or 0 for x in b["feeds"]), default=0),
             "backed_up": b["backed_up"], "quota_full": b["quota_full"], "audit": b["audit"]}
            for b in backups]


def group_document(group: Mapping[str, Any], sync: Doc, folder: Mapping[str, Any] | None,
                   backups: Iterable[Mapping[str, Any]] | None) -> Doc:
    """``group``: the group's own status; ``backups``: its backup status, None if not a member."""
    doc = dict(group)
    doc["sync"] = sync
    if folder is not None:
        doc["folders"] = [folder_summary(folder)]
        doc["conflicts"] = folder["conflicts"]
    if backups is not None:
        doc["receipts"] = receipt_summary(backups)
    return doc


def peer_document(p: PeerInfo, names: Mapping[bytes, str] | None = None) -> Doc:
    """One connected peer; ``name``: the name it published in one of our groups ("" if none)."""
    return {"peer_id": p.peer_id.hex(), "name": (names or {}).get(p.peer_id, ""), "address": p.address,
            "initiator": p.initiator, "kind": p.kind,
            "groups": list(p.groups), "bytes_sent": p.bytes_sent, "bytes_received": p.bytes_received,
            "paused": False, "connected": True}


def paused_peer_document(peer_id: bytes, names: Mapping[bytes, str] | None = None) -> Doc:
    return {"peer_id": peer_id.hex(), "name": (names or {}).get(peer_id, ""), "address": "", "initiator": False,
            "kind": "paused", "groups": [], "bytes_sent": 0, "bytes_received": 0, "paused": True, "connected": False}


def peer_documents(peers: Sequence[PeerInfo], paused: Iterable[bytes] = (),
                   names: Mapping[bytes, str] | None = None) -> list[Doc]:
    """The connected peers, then the paused devices that are not (still) connected."""
    out = [peer_document(p, names) for p in peers]
    connected = {p.peer_id for p in peers}
    return out + [paused_peer_document(pid, names) for pid in sorted(paused) if pid not in connected]


def status_document(*, peer_id: bytes, peer_key: str, home: str, pid: int, uptime: float,
                    listening: Sequence[str], advertised: Sequence[str], dht: Doc, lan_enabled: bool,
                    groups: Sequence[Doc], folders: Sequence[Doc], peers: Sequence[PeerInfo],
                    traffic: tuple[int, int], reachability: Doc, services: Sequence[Doc],
                    relay: Doc | None = None, controls: Doc | None = None, name: str = "",
                    names: Mapping[bytes, str] | None = None, twins: Doc | None = None) -> Doc:
    """``controls``: :meth:`cobox.controls.Controls.document` (``paused`` and ``limits``)."""
    controls = controls or {"paused": {"groups": [], "folders": [], "devices": []}, "limits": None}
    paused = [bytes.fromhex(d["peer_id"]) for d in controls["paused"]["devices"]]
    return {
        "peer_id": peer_id.hex(),
        "name": name,
        "peer_key": peer_key,
        "home": home,
        "pid": pid,
        "uptime": round(uptime, 1),
        "listening": list(listening),
        "advertised": list(advertised),
        "reachability": reachability,
        "dht": dht,
        "lan": {"enabled": lan_enabled},
        "groups": list(groups),
        "folders": list(folders),
        "services": list(services),
        "peers": peer_documents(peers, paused, names),
        "relay": relay,
        "paused": controls["paused"],
        "limits": controls["limits"],
        "twins": twins or {"peers": [], "reported": [], "words": ""},
        "bytes_sent": traffic[0],
        "bytes_received": traffic[1],
    }


def dashboard_document(status: Doc, events: Sequence[Doc], members: Mapping[str, list[Doc]], *,
                       version: str = "", features: Mapping[str, str | None] | None = None,
                       kinds: Mapping[str, str] | None = None, changes: Mapping[str, float] | None = None,
                       activity: Sequence[Doc] = ()) -> Doc:
    """The status document as the dashboard shows it: recent events, and per group the peers
    connected for it and the devices that write it; ``devices``: every device seen (members of
    any group, connected peers) with how it is connected and when it was last seen.

    ``features``: the optional API routes this daemon offers (name -> path, None when absent),
    so the page shows a control only where it works; ``kinds``: the last known connection kind
    per peer (events of peers gone keep how they were connected); ``changes``: per folder the
    newest file modification time; ``activity``: folder events in the dashboard's own words."""
    doc = dict(status)
    kinds = kinds or {}
    doc["events"] = [{**e, "connection": kinds.get(e.get("peer", ""), "")} for e in events]
    doc["activity"] = list(activity)
    doc["version"] = version
    doc["features"] = dict(features or {})
    groups = []
    for g in status["groups"]:
        g = dict(g)
        g["connected"] = [p["peer_id"] for p in status["peers"] if g["name"] in p.get("groups", [])
                          and p.get("connected", True)]
        g["members"] = members.get(g["name"], [])
        groups.append(g)
    doc["groups"] = groups
    doc["folders"] = [{**f, "last_change": (changes or {}).get(f.get("group", ""), 0.0)}
                      for f in status.get("folders", [])]
    doc["devices"] = device_documents(status, events, members)
    return doc


def device_documents(status: Doc, events: Sequence[Doc], members: Mapping[str, list[Doc]]) -> list[Doc]:
    """Every other device this one knows of: the members of its groups and the peers connected
    now, with the groups they share and the time of their latest connect or leave event."""
    me = status.get("peer_id", "")
    out: dict[str, Doc] = {}

    def device(pid: str) -> Doc:
        return out.setdefault(pid, {"peer_id": pid, "name": "", "connected": False, "paused": False, "kind": "",
                                    "address": "",
                                    "bytes_sent": 0, "bytes_received": 0, "groups": [], "last_seen": None})

    for name, ms in members.items():
        for m in ms:
            if m.get("this_device") or m.get("peer_id") == me:
                continue
            d = device(m["peer_id"])
            d["name"] = d["name"] or m.get("name", "") or ""
            if name not in d["groups"]:
                d["groups"].append(name)
    for p in status["peers"]:
        d = device(p["peer_id"])
        d["name"] = p.get("name") or d["name"]
        d["paused"] = bool(p.get("paused"))
        if not p.get("connected", True):
            continue  # a paused device that is not connected
        d.update(connected=True, kind=p.get("kind", ""), address=p.get("address", ""),
                 bytes_sent=p.get("bytes_sent", 0), bytes_received=p.get("bytes_received", 0))
        for name in p.get("groups", []):
            if name not in d["groups"]:
                d["groups"].append(name)
    for e in events:
        pid = e.get("peer", "")
        if pid in out and isinstance(e.get("time"), (int, float)):
            out[pid]["last_seen"] = max(out[pid]["last_seen"] or 0, e["time"])
    return sorted(out.values(), key=lambda d: (not d["connected"], d["name"] or "~", d["peer_id"]))


def metrics_text(m: Metrics) -> str:
    """Prometheus text exposition (version 0.0.4) of ``m``, written by ``prometheus_client`` so
    every family has its ``# HELP`` and ``# TYPE`` and label values are escaped."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(m))
    return generate_latest(registry).decode()


class _Collector(Collector):
    """Yields the families of one :class:`Metrics` snapshot (a fresh registry per scrape)."""

    def __init__(self, m: Metrics) -> None:
        self.m = m

    def collect(self) -> Iterator[Metric]:
        m = self.m
        yield GaugeMetricFamily("cobox_peers", "Connected peers.", value=m.peers)
        kinds = GaugeMetricFamily("cobox_peers_by_kind", "Connected peers by how they are reached.",
                                  labels=["kind"])
        for kind, n in m.connection_kinds:
            kinds.add_metric([kind or "unknown"], n)
        yield kinds
        yield GaugeMetricFamily("cobox_groups", "Groups on this device.", value=m.groups)
        yield CounterMetricFamily("cobox_bytes_sent", "Bytes sent to peers.", value=m.bytes_sent)
        yield CounterMetricFamily("cobox_bytes_received", "Bytes received from peers.", value=m.bytes_received)
        yield CounterMetricFamily("cobox_entries_replicated", "Entries received and verified from peers.",
                                  value=m.entries_replicated)
        yield CounterMetricFamily("cobox_protocol_errors", "Peers disconnected for breaking the protocol.",
                                  value=m.protocol_errors)
        families = {
            "entries": GaugeMetricFamily("cobox_group_entries", "Entries held in the group's feeds.",
                                         labels=["group"]),
            "received": CounterMetricFamily("cobox_group_bytes_received",
                                            "Bytes replicated into the group's feeds from peers.", labels=["group"]),
            "folder": GaugeMetricFamily("cobox_group_folder_bytes", "Size of the files in the group's folder.",
                                        labels=["group"]),
            "records": CounterMetricFamily("cobox_group_records_refused",
                                           "Records of other devices refused as invalid.", labels=["group"]),
            "feeds": CounterMetricFamily("cobox_group_feeds_refused", "Feeds of other devices refused at admission.",
                                         labels=["group"]),
        }
        audits = GaugeMetricFamily("cobox_group_backup_audits", "Backup peers by the result of their latest audit.",
                                   labels=["group", "result"])
        for g in m.group_entries:
            families["entries"].add_metric([g.name], g.entries)
            families["received"].add_metric([g.name], g.bytes_received)
            families["folder"].add_metric([g.name], g.folder_bytes)
            families["records"].add_metric([g.name], g.records_refused)
            families["feeds"].add_metric([g.name], g.feeds_refused)
            audits.add_metric([g.name, "passed"], g.audits_passed)
            audits.add_metric([g.name, "failed"], g.audits_failed)
        yield from families.values()
        yield audits
